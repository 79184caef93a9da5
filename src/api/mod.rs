//! The one HTTP client of the server APIs (hawkBit DDI, ThingsBoard's HTTP device
//! API, MCS REST): JSON in and out over the download engine's TLS setup, with
//!
//! - a capped answer (1 MiB unless a request says otherwise; a bigger one is an
//!   error, read with a running count and never allocated),
//! - typed errors ([`ApiError`]: the status when there was one, transient or
//!   permanent by [`crate::download::retry::retryable_status`], `Retry-After`),
//! - secrets (credential headers, tokens in paths, URL passwords) shown as `***`
//!   in every URL, header and error it prints,
//! - credentials sent only to the configured origin: redirects are followed here,
//!   not by reqwest, and a hop to another scheme, host or port carries none.
//!
//! The download engine keeps its own streaming path; both share the retry rule.

mod client;
mod error;
mod redact;

#[cfg(test)]
mod tests;

pub use client::{ApiClient, ApiRequest, ApiResponse, DEFAULT_MAX_BODY, ReadError, read_capped};
pub use error::{ApiError, error_chain};
pub use redact::Redactor;
