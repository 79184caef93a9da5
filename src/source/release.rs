//! The directory source's release keys: `released = true|false` (default true,
//! so folders written before releases existed keep working) and `groups = a,b`
//! (released to those device groups only). Both belong to the seed's product
//! firmware model: an uploaded version reaches test devices first.

use std::collections::BTreeMap;

use super::properties::Property;
use crate::model::Release;

/// A bad release key: its line, its name and why.
pub type KeyError = (usize, &'static str, String);

/// The release state a `.properties` file describes.
pub fn from_properties(props: &BTreeMap<String, Property>) -> Result<Release, KeyError> {
    let released = match props.get("released") {
        None => None,
        Some(p) => match p.value.trim() {
            "true" => Some(true),
            "false" => Some(false),
            other => {
                let msg = format!("must be true or false, got {other:?}");
                return Err((p.line, "released", msg));
            }
        },
    };
    let Some(groups) = props.get("groups") else {
        return Ok(match released {
            Some(false) => Release::Uploaded,
            _ => Release::All,
        });
    };
    if released == Some(true) {
        let msg = "released = true releases the firmware to every device; \
                   remove it to release to the named groups only"
            .to_string();
        return Err((groups.line, "groups", msg));
    }
    let mut names: Vec<String> = Vec::new();
    for name in groups.value.split(',').map(str::trim) {
        if let Some(problem) = Release::group_name_problem(name) {
            return Err((groups.line, "groups", problem));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    Ok(Release::Groups(names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::properties::parse;

    fn release(text: &str) -> Result<Release, KeyError> {
        from_properties(&parse(text))
    }

    #[test]
    fn release_keys() {
        let groups = |g: &[&str]| Ok(Release::Groups(g.iter().map(|s| s.to_string()).collect()));
        assert_eq!(release("version = 1\n"), Ok(Release::All));
        assert_eq!(release("released = true\n"), Ok(Release::All));
        assert_eq!(release("released = false\n"), Ok(Release::Uploaded));
        assert_eq!(
            release("groups = beta, test,beta\n"),
            groups(&["beta", "test"])
        );
        assert_eq!(
            release("released = false\ngroups = beta\n"),
            groups(&["beta"])
        );
    }

    #[test]
    fn bad_release_keys_name_line_and_key() {
        let cases = [
            (
                "v = 1\nreleased = yes\n",
                2,
                "released",
                "must be true or false",
            ),
            ("groups = beta,\n", 1, "groups", "must not be empty"),
            ("\ngroups = be ta\n", 2, "groups", "may only contain"),
            (
                "released = true\ngroups = beta\n",
                2,
                "groups",
                "every device",
            ),
        ];
        for (text, line, key, message) in cases {
            let (l, k, m) = release(text).unwrap_err();
            assert_eq!((l, k), (line, key), "{text}");
            assert!(m.contains(message), "{text}: {m}");
        }
    }
}
