//! What can go wrong talking to a server API, typed so callers decide between
//! "try again later" and "drop it" without reading messages. Every text in an
//! [`ApiError`] went through the request's [`super::Redactor`]: no secret in it.

use std::time::Duration;

use reqwest::StatusCode;

use crate::download::retry::retryable_status;

/// One failed API call. `target` is `METHOD url` with secrets as `***`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request could not be made: a bad URL or header, the client's TLS
    /// setup, a refused redirect. Repeating it will not help.
    #[error("{target}: {message}")]
    Request { target: String, message: String },
    /// No (complete) answer: connection refused or reset, a timeout, a body cut
    /// short. Worth another attempt.
    #[error("{target}: {message}")]
    Network { target: String, message: String },
    /// The server answered with a status other than 2xx; `detail` is the start
    /// of its error text (its JSON `message`, when it has one).
    #[error("{target}: HTTP {status}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Status {
        target: String,
        status: StatusCode,
        retry_after: Option<Duration>,
        detail: Option<String>,
    },
    /// The answer exceeds the request's body limit.
    #[error("{target}: answer larger than {limit} bytes")]
    TooLarge { target: String, limit: usize },
    /// A 2xx answer that is not what was expected (not JSON, wrong shape).
    #[error("{target}: unexpected reply: {message}")]
    Decode {
        target: String,
        status: StatusCode,
        message: String,
    },
}

impl ApiError {
    /// The HTTP status the server answered with, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Status { status, .. } | ApiError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Worth another attempt later: no answer (network, timeout) or a status the
    /// server may answer differently next time (5xx, 408, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Network { .. } => true,
            ApiError::Status { status, .. } => retryable_status(*status),
            ApiError::Request { .. } | ApiError::TooLarge { .. } | ApiError::Decode { .. } => false,
        }
    }

    /// How long the server asked to wait (`Retry-After`, bounded), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// An error and its sources, `outer: inner: innermost` (reqwest's useful part,
/// "connection refused" or the certificate problem, is in the chain).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
