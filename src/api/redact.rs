//! Secrets out of what the agent prints: each registered secret (a credential
//! header's value, a token that is part of a URL path) is replaced by `***`
//! wherever it appears, as typed or percent-encoded as it would be in a URL.

use reqwest::Url;

const SHOWN: &str = "***";

/// The texts to hide, longest first (so a secret containing another is hidden
/// whole).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// Hides `secret` from now on, in its plain and URL-encoded forms. Empty
    /// strings are ignored (there is nothing to hide).
    pub fn add(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        for form in [
            secret.to_string(),
            path_encoded(secret),
            query_encoded(secret),
        ] {
            if !self.secrets.contains(&form) {
                self.secrets.push(form);
            }
        }
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// `text` with every secret replaced by `***`.
    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), SHOWN);
            }
        }
        out
    }

    /// `url` as printable: user name and password (if any) and every secret as
    /// `***`.
    pub fn url(&self, url: &Url) -> String {
        let mut shown = url.clone();
        if !shown.username().is_empty() {
            let _ = shown.set_username(SHOWN);
        }
        if shown.password().is_some() {
            let _ = shown.set_password(Some(SHOWN));
        }
        self.apply(shown.as_str())
    }
}

/// `secret` as one URL path segment.
fn path_encoded(secret: &str) -> String {
    let mut url = Url::parse("http://x/").expect("a valid URL");
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.clear().push(secret);
    }
    url.path().trim_start_matches('/').to_string()
}

/// `secret` as a query value.
fn query_encoded(secret: &str) -> String {
    let mut url = Url::parse("http://x/").expect("a valid URL");
    url.query_pairs_mut().append_pair("k", secret);
    url.query()
        .and_then(|q| q.strip_prefix("k="))
        .unwrap_or(secret)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_plain_and_encoded_forms() {
        let mut r = Redactor::default();
        r.add("tok en/é");
        r.add("");
        assert_eq!(r.apply("a tok en/é b"), "a *** b");
        let mut url = Url::parse("http://h/api/v1/").unwrap();
        url.path_segments_mut()
            .unwrap()
            .pop_if_empty()
            .push("tok en/é");
        url.query_pairs_mut().append_pair("t", "tok en/é");
        let shown = r.url(&url);
        assert_eq!(shown, "http://h/api/v1/***?t=***");
        assert_eq!(r.apply("nothing secret"), "nothing secret");
    }

    #[test]
    fn hides_url_credentials_and_longer_secrets_whole() {
        let mut r = Redactor::default();
        r.add("abc");
        r.add("abcdef");
        assert_eq!(r.apply("x abcdef y abc"), "x *** y ***");
        let url = Url::parse("https://user:pw@h/p").unwrap();
        assert_eq!(r.url(&url), "https://***:***@h/p");
        assert_eq!(format!("{r:?}"), "Redactor(2 secrets)");
    }
}
