//! Firmware authenticity: minisign (Ed25519) signatures checked against the
//! operator's public keys, and the checksum policy for firmware that is not
//! signed. A checksum sent by the same server as the image only proves the
//! transfer; a signature proves who built it, so a compromised or impersonated
//! server cannot install anything once keys are configured.
//!
//! - [`config`]: `[trust]` (`public_keys`, `require_signature`,
//!   `allow_weak_checksums`).
//! - [`signature`]: one signature against the keys, and the trusted comment that
//!   binds it to a device type and a version.
//! - [`bundle`]: a POSIX tar holding exactly the image and its `.minisig`, for
//!   sources that deliver one file per package.
//! - [`checksums`]: what unsigned firmware must carry.
//! - [`admit`]: the step the engine runs on every fetched image before a
//!   handler may see it.

pub mod admit;
pub mod bundle;
pub mod checksums;
pub mod config;
pub mod signature;

use std::path::PathBuf;

pub use admit::{Admitted, admit};

/// A public key the operator trusts, and the file it came from (for messages).
#[derive(Clone)]
pub struct TrustedKey {
    pub path: PathBuf,
    pub key: minisign_verify::PublicKey,
}

impl TrustedKey {
    /// Reads a minisign public key file (as `minisign -G` writes it).
    pub fn load(path: &std::path::Path) -> Result<TrustedKey, TrustError> {
        let key = minisign_verify::PublicKey::from_file(path).map_err(|e| {
            TrustError::Io(format!(
                "{}: not a minisign public key: {e}",
                path.display()
            ))
        })?;
        Ok(TrustedKey {
            path: path.to_path_buf(),
            key,
        })
    }
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedKey")
            .field("path", &self.path)
            .finish()
    }
}

impl PartialEq for TrustedKey {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

/// `[trust]` as validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustPolicy {
    /// Keys any of which may sign firmware (several: key rotation).
    pub keys: Vec<TrustedKey>,
    /// Refuse firmware without a valid signature; default true when keys are set.
    pub require_signature: bool,
    /// Let unsigned firmware through with only MD5, SHA-1, CRC32 or MurmurHash3
    /// (or no checksum at all) from its source.
    pub allow_weak_checksums: bool,
}

impl TrustPolicy {
    /// One line for the log at start-up and for `status`.
    pub fn describe(&self) -> String {
        match (self.keys.len(), self.require_signature) {
            (0, _) => "not checked: no [trust] public_keys; firmware is trusted on its \
                       source's checksum"
                .into(),
            (n, true) => format!("signatures required ({n} trusted key(s))"),
            (n, false) => format!(
                "signatures checked when present ({n} trusted key(s)); unsigned firmware \
                 is trusted on its source's checksum"
            ),
        }
    }
}

/// Why an image is not admitted. Each message starts with what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("signature: no .minisig for this image (required by [trust])")]
    Missing,
    #[error("signature: not signed by a trusted key")]
    UntrustedKey,
    #[error("signature: does not match the image (changed after signing?)")]
    Invalid,
    #[error("signature: cannot be read: {0}")]
    Malformed(String),
    #[error("signature: signed for {what} {signed}, offered as {offered}")]
    Mismatch {
        what: &'static str,
        signed: String,
        offered: String,
    },
    #[error(
        "signature: the trusted comment names no {0}= (sign with -t \"type=<type> version=<version>\")"
    )]
    NoClaim(&'static str),
    #[error("bundle: {0}")]
    Bundle(String),
    #[error(
        "checksum: unsigned firmware needs SHA-256, SHA-384 or SHA-512 from its source, got {0} \
         (set [trust] allow_weak_checksums = true to accept it)"
    )]
    WeakChecksum(String),
    #[error("{0}")]
    Io(String),
}
