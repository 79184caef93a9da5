//! DDI URLs. The HTTP itself (the `Authorization` header only to the configured
//! server, JSON in and out, typed errors) is [`crate::api::ApiClient`]'s.

/// `href` without its query (`?c=…`), then `/suffix`.
pub fn sub_url(href: &str, suffix: &str) -> String {
    let bare = href.split(['?', '#']).next().unwrap_or(href);
    format!("{}/{suffix}", bare.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_feedback_urls() {
        assert_eq!(
            sub_url(
                "https://h/T/controller/v1/c/deploymentBase/5?c=-2",
                "feedback"
            ),
            "https://h/T/controller/v1/c/deploymentBase/5/feedback"
        );
        assert_eq!(sub_url("http://h/x/", "feedback"), "http://h/x/feedback");
    }
}
