//! One minisign signature checked against the trusted keys, and its trusted
//! comment checked against what the image is offered as. The comment is covered
//! by the signature, so `type=<device type> version=<version>` in it binds the
//! image to one device type and one version: an old signed image cannot be
//! replayed as a new version, nor one type's image sent to another type.

use std::io::Read;
use std::path::Path;

use minisign_verify::{Error as MinisignError, Signature};

use super::{TrustError, TrustedKey};

/// The largest `.minisig` read (a real one is about 300 bytes).
pub const MAX_SIGNATURE_LEN: u64 = 16 * 1024;

/// What the image is offered as; the trusted comment must say the same.
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    pub device_type: &'a str,
    pub version: &'a str,
}

/// Parses `.minisig` text.
pub fn parse(text: &str) -> Result<Signature, TrustError> {
    Signature::decode(text.trim()).map_err(|e| TrustError::Malformed(e.to_string()))
}

/// Verifies `signature` over the bytes `feed` hands to its sink, then the claims
/// of its trusted comment.
pub fn verify<F>(
    keys: &[TrustedKey],
    signature: &Signature,
    claims: Claims<'_>,
    feed: F,
) -> Result<(), TrustError>
where
    F: FnOnce(&mut dyn FnMut(&[u8])) -> Result<(), TrustError>,
{
    let mut verifier = keys
        .iter()
        .find_map(|k| match k.key.verify_stream(signature) {
            Err(MinisignError::UnexpectedKeyId) => None,
            other => Some(other),
        })
        .ok_or(TrustError::UntrustedKey)?
        .map_err(|e| TrustError::Malformed(e.to_string()))?;
    feed(&mut |bytes| verifier.update(bytes))?;
    verifier.finalize().map_err(|e| match e {
        MinisignError::InvalidSignature => TrustError::Invalid,
        other => TrustError::Malformed(other.to_string()),
    })?;
    check_claims(signature.trusted_comment(), claims)
}

/// [`verify`] over the file at `image` (blocking: run it off the runtime).
pub fn verify_file(
    keys: &[TrustedKey],
    signature: &Signature,
    claims: Claims<'_>,
    image: &Path,
) -> Result<(), TrustError> {
    let io = |e: std::io::Error| TrustError::Io(format!("{}: {e}", image.display()));
    let mut file = std::fs::File::open(image).map_err(io)?;
    verify(keys, signature, claims, |sink| {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf).map_err(io)? {
                0 => return Ok(()),
                n => sink(&buf[..n]),
            }
        }
    })
}

/// `type=` and `version=` tokens of the trusted comment (whitespace-separated,
/// any order, other tokens allowed) must name what the image is offered as.
fn check_claims(comment: &str, claims: Claims<'_>) -> Result<(), TrustError> {
    for (what, offered) in [("type", claims.device_type), ("version", claims.version)] {
        let prefix = format!("{what}=");
        let mut signed = comment
            .split_ascii_whitespace()
            .filter_map(|t| t.strip_prefix(prefix.as_str()))
            .peekable();
        if signed.peek().is_none() {
            return Err(TrustError::NoClaim(what));
        }
        if let Some(other) = signed.find(|s| *s != offered) {
            return Err(TrustError::Mismatch {
                what,
                signed: other.to_string(),
                offered: offered.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLAIMS: Claims<'static> = Claims {
        device_type: "esp8266",
        version: "2.0.1",
    };

    /// `hello`, signed by `minisign -S -t "type=t version=2.0"` with the key
    /// below (made for this test; its secret half was thrown away).
    const SIGNED_HELLO: &str = "untrusted comment: signature from minisign secret key
RURHoHvI/b37zAg87e//movdj+N5fbsydYB0LCEGP8cnS3HlmhGgg8dSHb3rS+FSdyGvFsAAmehAlz6iWfT14MvdZI8knJPI5AA=
trusted comment: type=t version=2.0
CRvBgimfJyRQmzrlcQS96KCe1RyMFJ+NxC2uP1al6cYyB0Y9Gz99YyS4MfprQgqbI6g887jxX3OKHzv0M6JRDw==
";

    fn key(base64: &str) -> TrustedKey {
        TrustedKey {
            path: "release.pub".into(),
            key: minisign_verify::PublicKey::from_base64(base64).unwrap(),
        }
    }

    /// The image as signed passes; one changed byte, another key or other
    /// claims do not.
    #[test]
    fn a_signature_holds_for_its_key_bytes_and_claims_only() {
        let signer = [key(
            "RWRHoHvI/b37zIeQVpQZDop+3qqdKwHqA1JkMlJ0+8BcTtv33ZYlzeII",
        )];
        let other = [key(
            "RWRMoDpPpWjyO/HYkhmrtRcqRTWa7HUNn+mDRAxpzgYpOAV2W/vRauJn",
        )];
        let sig = parse(SIGNED_HELLO).unwrap();
        let claims = Claims {
            device_type: "t",
            version: "2.0",
        };
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fw.bin");
        std::fs::write(&image, b"hello").unwrap();
        assert_eq!(verify_file(&signer, &sig, claims, &image), Ok(()));
        let newer = Claims {
            version: "2.1",
            ..claims
        };
        let replayed = verify_file(&signer, &sig, newer, &image).unwrap_err();
        assert!(matches!(
            replayed,
            TrustError::Mismatch {
                what: "version",
                ..
            }
        ));
        let unknown = verify_file(&other, &sig, claims, &image).unwrap_err();
        assert_eq!(unknown, TrustError::UntrustedKey);
        std::fs::write(&image, b"hellO").unwrap();
        let changed = verify_file(&signer, &sig, claims, &image).unwrap_err();
        assert_eq!(changed, TrustError::Invalid);
    }

    #[test]
    fn the_comment_must_name_the_type_and_the_version() {
        assert_eq!(
            check_claims("fota-agent version=2.0.1 type=esp8266", CLAIMS),
            Ok(())
        );
        assert_eq!(
            check_claims("type=esp8266\tversion=2.0.0", CLAIMS),
            Err(TrustError::Mismatch {
                what: "version",
                signed: "2.0.0".into(),
                offered: "2.0.1".into()
            })
        );
        assert_eq!(
            check_claims("type=mt7681 version=2.0.1", CLAIMS),
            Err(TrustError::Mismatch {
                what: "type",
                signed: "mt7681".into(),
                offered: "esp8266".into()
            })
        );
        assert_eq!(
            check_claims("timestamp:1 file:fw.bin", CLAIMS),
            Err(TrustError::NoClaim("type"))
        );
        // A second, contradicting token cannot hide behind a matching one.
        assert!(check_claims("type=esp8266 version=2.0.1 version=9", CLAIMS).is_err());
        // `subtype=` is not `type=`.
        assert_eq!(
            check_claims("subtype=esp8266 version=2.0.1", CLAIMS),
            Err(TrustError::NoClaim("type"))
        );
    }
}
