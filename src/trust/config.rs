//! `[trust]`: the public keys firmware must be signed with, and the policy for
//! firmware that is not signed.
//!
//! ```toml
//! [trust]
//! public_keys = ["keys/release.pub"]   # relative to the config's folder
//! require_signature = true             # default: true when public_keys is set
//! allow_weak_checksums = false         # unsigned firmware with only MD5/CRC32/none
//! ```

use serde::Deserialize;
use toml::Spanned;

use super::{TrustPolicy, TrustedKey};
use crate::config::ConfigError;
use crate::config::check::Checker;

/// `[trust]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrust {
    public_keys: Option<Spanned<Vec<Spanned<String>>>>,
    require_signature: Option<Spanned<bool>>,
    allow_weak_checksums: Option<bool>,
}

/// Reads every key file now, so a missing or broken key stops the start with
/// the key's line rather than failing each update later.
pub(crate) fn validate(check: &Checker<'_>, raw: RawTrust) -> Result<TrustPolicy, ConfigError> {
    let mut keys = Vec::new();
    for value in raw.public_keys.iter().flat_map(|v| v.get_ref()) {
        let path = check.dir(value, "public_keys", "trust.public_keys")?;
        let key = TrustedKey::load(&path)
            .map_err(|e| check.at(value, "public_keys", format!("trust.public_keys: {e}")))?;
        keys.push(key);
    }
    let require_signature = match &raw.require_signature {
        Some(r) if *r.get_ref() && keys.is_empty() => {
            let msg = "trust.require_signature: needs at least one key in trust.public_keys";
            return Err(check.at(r, "require_signature", msg.into()));
        }
        Some(r) => *r.get_ref(),
        None => !keys.is_empty(),
    };
    Ok(TrustPolicy {
        keys,
        require_signature,
        allow_weak_checksums: raw.allow_weak_checksums.unwrap_or(false),
    })
}
