//! What the source needs from a ThingsBoard connection, whichever protocol carries
//! it: read shared attributes, wait for their updates, send telemetry, fetch one
//! chunk of a package. `http` and `mqtt` implement it; errors never carry a token.

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::config::{AccessToken, OtaKind};

#[derive(Debug, Clone, thiserror::Error)]
pub enum TbError {
    /// Network trouble, a timeout, a 5xx, 408 or 429: worth retrying.
    #[error("{0}")]
    Transient(String),
    /// The server refused the request (4xx): retrying the same request will not help.
    #[error("{0}")]
    Refused(String),
    /// A reply that does not parse.
    #[error("malformed reply: {0}")]
    Malformed(String),
}

impl TbError {
    pub fn retryable(&self) -> bool {
        !matches!(self, TbError::Refused(_))
    }
}

/// One chunk of a package.
#[derive(Debug, Clone, Copy)]
pub struct ChunkRequest<'a> {
    pub kind: OtaKind,
    pub title: &'a str,
    pub version: &'a str,
    pub chunk_size: u32,
    pub index: u64,
}

#[async_trait]
pub trait Transport: Send + Sync {
    /// The shared attributes `keys` of the device with `token`.
    async fn shared_attributes(
        &self,
        token: &AccessToken,
        keys: &[String],
    ) -> Result<Map<String, Value>, TbError>;

    /// Waits for the next shared-attribute update of `token`: the changed
    /// attributes, or `None` when nothing changed within the poll timeout.
    async fn next_update(&self, token: &AccessToken)
    -> Result<Option<Map<String, Value>>, TbError>;

    /// Sends one telemetry record (`{"ts":…, "values":{…}}`).
    async fn telemetry(&self, token: &AccessToken, record: &Value) -> Result<(), TbError>;

    /// One chunk; shorter than `chunk_size` (or empty) at the end of the package.
    async fn chunk(&self, token: &AccessToken, request: ChunkRequest<'_>)
    -> Result<Bytes, TbError>;
}
