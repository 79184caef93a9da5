//! The trust step of every fetched image, between the checksum comparison and
//! the handler: unpack a signed bundle, verify the signature against the keys
//! and the claims, or apply the checksum policy to unsigned firmware.

use std::path::{Path, PathBuf};

use super::signature::{self, Claims, MAX_SIGNATURE_LEN};
use super::{TrustError, TrustPolicy, bundle, checksums};
use crate::api::ReadError;
use crate::checksum::{Digests, MultiHasher};
use crate::download::Downloader;
use crate::model::{Firmware, FirmwareLocation};

/// What admitting an image found.
#[derive(Debug)]
pub struct Admitted {
    /// The image was a bundle: the file now holds its image alone, with these digests.
    pub unpacked: Option<Digests>,
    /// A trusted key signed it.
    pub signed: bool,
}

/// Before anything is fetched: without keys nothing can be signed, so the
/// checksum policy decides now rather than after a download.
pub fn precheck(policy: &TrustPolicy, firmware: &Firmware) -> Result<(), TrustError> {
    if policy.keys.is_empty() {
        checksums::check(policy, firmware)?;
    }
    Ok(())
}

/// Admits the fetched, checksum-verified image at `image` for `firmware`, or
/// says why not. A bundle is replaced by its image (hashed with `hasher`).
pub async fn admit(
    policy: &TrustPolicy,
    firmware: &Firmware,
    image: &Path,
    downloader: &Downloader,
    hasher: MultiHasher,
) -> Result<Admitted, TrustError> {
    let path = image.to_path_buf();
    let is_bundle = blocking(move || {
        bundle::is_bundle(&path).map_err(|e| TrustError::Io(format!("{}: {e}", path.display())))
    })
    .await?;
    let (text, unpacked) = if is_bundle {
        let (text, digests) = unpack(image, hasher).await?;
        (Some(text), Some(digests))
    } else if policy.keys.is_empty() {
        (None, None)
    } else {
        (detached(firmware, downloader).await?, None)
    };
    let signed = match (policy.keys.is_empty(), text) {
        (true, _) => false,
        (false, Some(text)) => {
            let sig = signature::parse(&text)?;
            let (keys, fw, path) = (policy.keys.clone(), firmware.clone(), image.to_path_buf());
            blocking(move || {
                let claims = Claims {
                    device_type: &fw.device_type,
                    version: &fw.version,
                };
                signature::verify_file(&keys, &sig, claims, &path)
            })
            .await?;
            true
        }
        (false, None) if policy.require_signature => return Err(TrustError::Missing),
        (false, None) => false,
    };
    if !signed {
        checksums::check(policy, firmware)?;
    }
    Ok(Admitted { unpacked, signed })
}

/// Replaces the bundle at `image` by the image it holds; returns the signature
/// text and the image's digests. On error the bundle stays as it was.
async fn unpack(image: &Path, hasher: MultiHasher) -> Result<(String, Digests), TrustError> {
    let out = unpacked_path(image);
    let (bundle, target) = (image.to_path_buf(), out.clone());
    let result = blocking(move || bundle::unpack(&bundle, &target, hasher)).await;
    let u = match result {
        Ok(u) => u,
        Err(e) => {
            let _ = tokio::fs::remove_file(&out).await;
            return Err(e);
        }
    };
    tracing::debug!(bundle = %image.display(), image = %u.name, "unpacked a signed bundle");
    let (from, to) = (out.clone(), image.to_path_buf());
    blocking(move || {
        crate::download::replace_durably(&from, &to)
            .map_err(|e| TrustError::Io(format!("{}: {e}", to.display())))
    })
    .await?;
    Ok((u.signature, u.digests))
}

fn unpacked_path(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(".unpacked");
    PathBuf::from(name)
}

/// The detached signature of `firmware`: `<file>.minisig` beside a local
/// image, or the URL its source named (hawkBit's `<file>.minisig` artifact).
async fn detached(
    firmware: &Firmware,
    downloader: &Downloader,
) -> Result<Option<String>, TrustError> {
    if let FirmwareLocation::File(path) = &firmware.location {
        let mut sig = path.as_os_str().to_owned();
        sig.push(".minisig");
        return read_local(Path::new(&sig)).await;
    }
    match &firmware.signature_url {
        Some(url) => fetch(url, firmware, downloader).await.map(Some),
        None => Ok(None),
    }
}

async fn read_local(path: &Path) -> Result<Option<String>, TrustError> {
    let io = |e: std::io::Error| TrustError::Io(format!("{}: {e}", path.display()));
    match tokio::fs::metadata(path).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
        Ok(m) if !m.is_file() || m.len() > MAX_SIGNATURE_LEN => {
            return Err(TrustError::Malformed(format!(
                "{}: not a regular file of at most {MAX_SIGNATURE_LEN} bytes",
                path.display()
            )));
        }
        Ok(_) => {}
    }
    tokio::fs::read_to_string(path).await.map(Some).map_err(io)
}

/// GETs a detached signature, with the image's download headers, capped.
async fn fetch(
    url: &str,
    firmware: &Firmware,
    downloader: &Downloader,
) -> Result<String, TrustError> {
    let failed = |why: String| TrustError::Malformed(format!("cannot fetch the .minisig: {why}"));
    if downloader.config().https_only && !crate::download::is_https(url) {
        return Err(failed(format!("{url} is not https")));
    }
    let mut request = downloader.client().get(url);
    for (name, value) in &firmware.download_headers.0 {
        request = request.header(name, value);
    }
    let response = request
        .send()
        .await
        .map_err(|e| failed(crate::api::error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status())));
    }
    let body = match crate::api::read_capped(response, MAX_SIGNATURE_LEN as usize).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => {
            return Err(failed(format!("larger than {MAX_SIGNATURE_LEN} bytes")));
        }
        Err(ReadError::Network(e)) => return Err(failed(crate::api::error_chain(&e))),
    };
    String::from_utf8(body.to_vec()).map_err(|_| failed("not text".into()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TrustError> + Send + 'static,
) -> Result<T, TrustError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(TrustError::Io(format!("verification task: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::DownloadConfig;
    use crate::trust::TrustedKey;

    /// A public key only (no image here is signed with it).
    fn key() -> TrustedKey {
        TrustedKey {
            path: "release.pub".into(),
            key: minisign_verify::PublicKey::from_base64(
                "RWRMoDpPpWjyO/HYkhmrtRcqRTWa7HUNn+mDRAxpzgYpOAV2W/vRauJn",
            )
            .unwrap(),
        }
    }

    fn policy(keys: Vec<TrustedKey>, require_signature: bool) -> TrustPolicy {
        TrustPolicy {
            keys,
            require_signature,
            allow_weak_checksums: false,
        }
    }

    /// Served firmware with `checksums` and no signature URL.
    fn served(checksums: Vec<crate::checksum::Checksum>) -> Firmware {
        let url = FirmwareLocation::Url("http://127.0.0.1:9/fw.bin".into());
        let mut firmware = Firmware::new("t", "2.0", url);
        firmware.checksums = checksums;
        firmware
    }

    fn sha256() -> crate::checksum::Checksum {
        let hex = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        crate::checksum::Checksum::new(crate::checksum::ChecksumAlgorithm::Sha256, hex).unwrap()
    }

    /// Without keys the checksum policy refuses before any download; with keys
    /// it waits for the image (it may turn out signed).
    #[test]
    fn precheck_applies_the_checksum_policy_only_without_keys() {
        let err = precheck(&policy(vec![], false), &served(vec![])).unwrap_err();
        assert_eq!(err, TrustError::WeakChecksum("none".into()));
        precheck(&policy(vec![], false), &served(vec![sha256()])).unwrap();
        precheck(&policy(vec![key()], true), &served(vec![])).unwrap();
    }

    /// An unsigned image under keys: refused when signatures are required, else
    /// held to the checksum policy like firmware without keys.
    #[tokio::test]
    async fn an_unsigned_image_needs_no_requirement_and_a_strong_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("dev.img");
        std::fs::write(&image, b"hello").unwrap();
        let downloader = Downloader::new(DownloadConfig::default()).unwrap();
        let admit_with = |policy: TrustPolicy, firmware: Firmware| {
            let (image, downloader) = (image.clone(), &downloader);
            async move {
                let hasher = MultiHasher::new([]);
                admit(&policy, &firmware, &image, downloader, hasher).await
            }
        };
        let err = admit_with(policy(vec![key()], true), served(vec![sha256()])).await;
        assert_eq!(err.unwrap_err(), TrustError::Missing);
        let err = admit_with(policy(vec![key()], false), served(vec![])).await;
        assert_eq!(err.unwrap_err(), TrustError::WeakChecksum("none".into()));
        let ok = admit_with(policy(vec![key()], false), served(vec![sha256()])).await;
        let admitted = ok.unwrap();
        assert!(!admitted.signed && admitted.unpacked.is_none());
        assert_eq!(std::fs::read(&image).unwrap(), b"hello");
    }

    /// A bundle is replaced by the image it holds (nothing left beside it),
    /// whose digests are the ones returned.
    #[tokio::test]
    async fn a_bundle_is_replaced_by_its_image() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("dev.img");
        let mut tar = tar::Builder::new(std::fs::File::create(&image).unwrap());
        for (name, data) in [("fw.bin", &b"hello"[..]), ("fw.bin.minisig", b"sig")] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, data).unwrap();
        }
        tar.finish().unwrap();
        drop(tar);
        let downloader = Downloader::new(DownloadConfig::default()).unwrap();
        let hasher = MultiHasher::new([crate::checksum::ChecksumAlgorithm::Sha256]);
        let firmware = served(vec![sha256()]);
        let admitted = admit(
            &policy(vec![], false),
            &firmware,
            &image,
            &downloader,
            hasher,
        )
        .await
        .unwrap();
        let digests = admitted.unpacked.expect("not unpacked");
        assert_eq!(digests.verify(&[sha256()]), Ok(()));
        assert_eq!(std::fs::read(&image).unwrap(), b"hello");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A local image's signature is `<file>.minisig` beside it; served firmware
    /// without a signature URL has none.
    #[tokio::test]
    async fn the_detached_signature_of_a_local_image_lies_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fw.bin");
        let local = Firmware::new("t", "2.0", FirmwareLocation::File(path.clone()));
        let downloader = Downloader::new(DownloadConfig::default()).unwrap();
        assert_eq!(detached(&local, &downloader).await.unwrap(), None);
        std::fs::write(dir.path().join("fw.bin.minisig"), "signature text").unwrap();
        let text = detached(&local, &downloader).await.unwrap();
        assert_eq!(text.as_deref(), Some("signature text"));
        assert_eq!(detached(&served(vec![]), &downloader).await.unwrap(), None);
    }

    /// A local `.minisig` is read when it is a regular file of at most
    /// `MAX_SIGNATURE_LEN` bytes; absent is "unsigned", anything else an error.
    #[tokio::test]
    async fn a_local_signature_is_a_small_regular_file_or_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fw.bin.minisig");
        assert_eq!(read_local(&path).await.unwrap(), None);
        let max = "x".repeat(MAX_SIGNATURE_LEN as usize);
        std::fs::write(&path, &max).unwrap();
        assert_eq!(
            read_local(&path).await.unwrap().as_deref(),
            Some(max.as_str())
        );
        std::fs::write(&path, format!("{max}x")).unwrap();
        let err = read_local(&path).await.unwrap_err();
        assert!(matches!(err, TrustError::Malformed(_)), "{err}");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let err = read_local(&path).await.unwrap_err();
        assert!(matches!(err, TrustError::Malformed(_)), "{err}");
        // Not "absent": a path that cannot be looked at (a file as a folder).
        std::fs::write(dir.path().join("plain"), b"").unwrap();
        let err = read_local(&dir.path().join("plain/fw.bin.minisig"))
            .await
            .unwrap_err();
        assert!(matches!(err, TrustError::Io(_)), "{err}");
    }

    /// Serves one HTTP request with `status` and `body` on loopback; the URL.
    async fn serve_once(status: &'static str, body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/fw.bin.minisig", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tcp.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            tcp.write_all(answer.as_bytes()).await.unwrap();
        });
        url
    }

    /// A served signature is its body when the server answers 200, and an
    /// error naming the status otherwise.
    #[tokio::test]
    async fn a_served_signature_needs_a_success_status() {
        let downloader = Downloader::new(DownloadConfig::default()).unwrap();
        let url = serve_once("200 OK", "signature text").await;
        let text = fetch(&url, &served(vec![]), &downloader).await.unwrap();
        assert_eq!(text, "signature text");
        let url = serve_once("404 Not Found", "").await;
        let err = fetch(&url, &served(vec![]), &downloader).await.unwrap_err();
        assert!(err.to_string().contains("HTTP 404"), "{err}");
    }

    /// With `https_only`, a signature URL over plain HTTP is refused before
    /// any request; without it, the request is made (here answered 404).
    #[tokio::test]
    async fn https_only_refuses_a_plain_http_signature_url() {
        let url = serve_once("404 Not Found", "").await;
        let firmware = Firmware::new("t", "2.0", FirmwareLocation::Url(url.clone()));
        let strict = Downloader::new(DownloadConfig {
            https_only: true,
            ..DownloadConfig::default()
        })
        .unwrap();
        let err = fetch(&url, &firmware, &strict).await.unwrap_err();
        assert!(err.to_string().contains("is not https"), "{err}");
        let lenient = Downloader::new(DownloadConfig::default()).unwrap();
        let err = fetch(&url, &firmware, &lenient).await.unwrap_err();
        assert!(err.to_string().contains("HTTP 404"), "{err}");
    }
}
