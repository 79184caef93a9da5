//! Brings a firmware image into the state directory and verifies it: the one place
//! a [`VerifiedImage`] is made. The bytes are streamed once through every digest
//! (never held in memory), size and checksums are compared, and only then is the
//! file renamed into place; a mismatch deletes the partial file and names what
//! differed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncReadExt;

use crate::checksum::{ChecksumAlgorithm, ChecksumError, Digests, MultiHasher};
use crate::download::{self, DownloadRequest, Downloader, part_path};
use crate::handler::{VerifiedImage, VerifiedPart};
use crate::model::{Firmware, FirmwareLocation};
use crate::progress::Progress;
use crate::store::StagedPart;
use crate::trust::{self, TrustPolicy};

const CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    Size { expected: u64, actual: u64 },
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
    #[error("firmware is for device type {firmware:?}, device {device_id:?} is {device:?}")]
    WrongDevice {
        device_id: String,
        device: String,
        firmware: String,
    },
    #[error(transparent)]
    Download(#[from] crate::download::DownloadError),
    #[error("download: {0}")]
    Remote(crate::model::FetchFailure),
    #[error("image of {size} bytes exceeds max_image_size {max}")]
    TooLarge { size: u64, max: u64 },
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    #[error("firmware part name {0:?} must be letters, digits, '.', '_' or '-'")]
    PartName(String),
    #[error("staged firmware part {0:?} is missing; transfer it again")]
    PartMissing(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where `device_id`'s verified image lives until its update is done.
pub fn image_path(downloads: &Path, device_id: &str) -> PathBuf {
    downloads.join(format!("{device_id}.img"))
}

/// Where and how an image is fetched.
pub struct FetchContext<'a> {
    pub downloads: &'a Path,
    pub downloader: &'a Downloader,
    pub trust: &'a TrustPolicy,
    /// Firmware bytes fetched since the start (metrics).
    pub bytes: &'a AtomicU64,
}

/// Where the further file `name` of `device_id`'s firmware lives beside its image.
pub fn part_path_for(downloads: &Path, device_id: &str, name: &str) -> PathBuf {
    downloads.join(format!("{device_id}.{name}.img"))
}

/// Removes `device_id`'s staged image and the further files of `firmware`.
pub fn remove_images(downloads: &Path, device_id: &str, firmware: &Firmware) {
    let _ = std::fs::remove_file(image_path(downloads, device_id));
    for part in &firmware.parts {
        let _ = std::fs::remove_file(part_path_for(downloads, device_id, &part.name));
    }
}

/// Copies `firmware` into `downloads`, reporting percent on the current progress
/// step, and verifies it for `device_type`: size and checksums, then the trust
/// policy (signature, or the checksum policy for unsigned firmware). Further
/// files of the firmware pass the same steps; if any fails, none is kept.
pub async fn fetch_and_verify(
    ctx: &FetchContext<'_>,
    firmware: &Firmware,
    device_id: &str,
    device_type: &str,
    progress: &Progress,
) -> Result<VerifiedImage, FetchError> {
    if firmware.device_type != device_type {
        return Err(FetchError::WrongDevice {
            device_id: device_id.to_string(),
            device: device_type.to_string(),
            firmware: firmware.device_type.clone(),
        });
    }
    trust::admit::precheck(ctx.trust, firmware)?;
    for part in &firmware.parts {
        if !plain_name(&part.name) {
            return Err(FetchError::PartName(part.name.clone()));
        }
        trust::admit::precheck(ctx.trust, &firmware.for_part(part))?;
    }
    let dest = image_path(ctx.downloads, device_id);
    let digests = fetch_admitted(ctx, firmware, &dest, device_id, progress).await?;
    let mut parts = Vec::with_capacity(firmware.parts.len());
    for part in &firmware.parts {
        let path = part_path_for(ctx.downloads, device_id, &part.name);
        let fetched =
            fetch_admitted(ctx, &firmware.for_part(part), &path, device_id, progress).await;
        let digests = fetched.inspect_err(|_| remove_images(ctx.downloads, device_id, firmware))?;
        parts.push(VerifiedPart {
            name: part.name.clone(),
            path,
            digests,
        });
    }
    Ok(VerifiedImage::new(dest, firmware.clone(), digests).with_parts(parts))
}

/// A part name becomes part of a file name: letters, digits, `.`, `_`, `-`.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// One file of `firmware` fetched to `dest`, checked and admitted by the trust
/// policy; deleted when it is not admitted.
async fn fetch_admitted(
    ctx: &FetchContext<'_>,
    firmware: &Firmware,
    dest: &Path,
    device_id: &str,
    progress: &Progress,
) -> Result<Digests, FetchError> {
    let digests = fetch_checked(firmware, dest, ctx.downloader, progress, ctx.bytes).await?;
    let admitted = trust::admit(
        ctx.trust,
        firmware,
        dest,
        ctx.downloader,
        hasher_for(firmware),
    )
    .await
    .inspect_err(|_| {
        let _ = std::fs::remove_file(dest);
    })?;
    if admitted.signed {
        tracing::info!(device = %device_id, version = %firmware.version, "signature verified");
    }
    Ok(admitted.unpacked.unwrap_or(digests))
}

/// The image at `dest`, its size and its source's checksums verified.
async fn fetch_checked(
    firmware: &Firmware,
    dest: &Path,
    downloader: &Downloader,
    progress: &Progress,
    bytes: &AtomicU64,
) -> Result<Digests, FetchError> {
    let source = match &firmware.location {
        FirmwareLocation::File(p) => p.clone(),
        FirmwareLocation::Url(url) => {
            let request = DownloadRequest {
                url,
                dest,
                size: firmware.size,
                checksums: &firmware.checksums,
                also_hash: &ALWAYS,
                headers: &firmware.download_headers.0,
            };
            let seen = AtomicU64::new(0);
            let report = |done: u64, total: Option<u64>| {
                let before = seen.fetch_max(done, Ordering::Relaxed);
                bytes.fetch_add(done.saturating_sub(before), Ordering::Relaxed);
                if let Some(pct) = total.and_then(|t| (done.min(t) * 100).checked_div(t)) {
                    let _ = progress.update(pct as u8);
                }
            };
            return Ok(downloader.fetch(&request, &report).await?);
        }
        FirmwareLocation::Remote(remote) => {
            return fetch_remote(remote, firmware, dest, downloader, progress).await;
        }
    };
    if let (Some(max), Ok(meta)) = (
        downloader.config().max_image_size,
        std::fs::metadata(&source),
    ) && meta.len() > max
    {
        return Err(FetchError::TooLarge {
            size: meta.len(),
            max,
        });
    }
    let hashed = copy_hashing(&source, dest, firmware, progress, bytes).await;
    commit_checked(hashed, firmware, dest).await
}

/// Commits the partial file of `dest` once its digests (`hashed`) match the
/// firmware's checksums; a failed hash or check deletes the partial file, so the
/// next attempt starts over.
async fn commit_checked(
    hashed: Result<Digests, FetchError>,
    firmware: &Firmware,
    dest: &Path,
) -> Result<Digests, FetchError> {
    let digests = match hashed.and_then(|d| check(firmware, d)) {
        Ok(d) => d,
        Err(e) => {
            let _ = tokio::fs::remove_file(part_path(dest)).await;
            return Err(e);
        }
    };
    download::commit_staged(dest)?;
    Ok(digests)
}

/// A source's own fetch (see [`crate::model::RemoteFetch`]) into the partial file,
/// then the same verification as a local copy. A failed fetch keeps the partial
/// file for the next attempt; a failed verification deletes it.
async fn fetch_remote(
    remote: &crate::model::RemoteImage,
    firmware: &Firmware,
    dest: &Path,
    downloader: &Downloader,
    progress: &Progress,
) -> Result<Digests, FetchError> {
    if let (Some(max), Some(size)) = (downloader.config().max_image_size, firmware.size)
        && size > max
    {
        return Err(FetchError::TooLarge { size, max });
    }
    let part = part_path(dest);
    let report = |done: u64, total: Option<u64>| {
        if let Some(pct) = total.and_then(|t| (done.min(t) * 100).checked_div(t)) {
            let _ = progress.update(pct as u8);
        }
    };
    remote
        .fetcher
        .fetch(&part, &report)
        .await
        .map_err(FetchError::Remote)?;
    let hashed = hash_file(&part, firmware).await;
    commit_checked(hashed, firmware, dest).await
}

/// Re-verifies an image that was staged earlier (background transfer) before its
/// update step, so a file changed or corrupted on disk never reaches the device;
/// the firmware's further files are re-checked against their recorded SHA-256 too.
pub async fn reverify(
    downloads: &Path,
    device_id: &str,
    firmware: &Firmware,
    sha256: &str,
    staged_parts: &[StagedPart],
) -> Result<VerifiedImage, FetchError> {
    // The SHA-256 recorded when the image was verified and admitted covers it
    // (the source's own checksums may be of a bundle it was unpacked from).
    let path = image_path(downloads, device_id);
    let digests = rehash(&path, firmware, sha256).await?;
    let mut parts = Vec::with_capacity(firmware.parts.len());
    for part in &firmware.parts {
        let recorded = staged_parts
            .iter()
            .find(|p| p.name == part.name)
            .ok_or_else(|| FetchError::PartMissing(part.name.clone()))?;
        let path = part_path_for(downloads, device_id, &part.name);
        let digests = rehash(&path, &firmware.for_part(part), &recorded.sha256).await?;
        parts.push(VerifiedPart {
            name: part.name.clone(),
            path,
            digests,
        });
    }
    Ok(VerifiedImage::new(path, firmware.clone(), digests).with_parts(parts))
}

/// The digests of `path`, whose SHA-256 must be `sha256`.
async fn rehash(path: &Path, firmware: &Firmware, sha256: &str) -> Result<Digests, FetchError> {
    let digests = hash_file(path, firmware).await?;
    let actual = digests.get(ChecksumAlgorithm::Sha256).unwrap_or("");
    if actual != sha256 {
        return Err(ChecksumError::Mismatch {
            algorithm: ChecksumAlgorithm::Sha256,
            expected: sha256.to_string(),
            actual: actual.to_string(),
        }
        .into());
    }
    Ok(digests)
}

/// Computed for every image, given or not: the store records it and a staged
/// image is re-checked against it. Other digests are computed only when the
/// firmware names them (each one costs a full pass over the data).
const ALWAYS: [ChecksumAlgorithm; 1] = [ChecksumAlgorithm::Sha256];

fn algorithms_for(firmware: &Firmware) -> impl Iterator<Item = ChecksumAlgorithm> + '_ {
    firmware.checksums.iter().map(|c| c.algorithm).chain(ALWAYS)
}

fn hasher_for(firmware: &Firmware) -> MultiHasher {
    MultiHasher::new(algorithms_for(firmware))
}

fn check(firmware: &Firmware, digests: Digests) -> Result<Digests, FetchError> {
    if let Some(expected) = firmware.size
        && expected != digests.length
    {
        return Err(FetchError::Size {
            expected,
            actual: digests.length,
        });
    }
    digests.verify(&firmware.checksums)?;
    Ok(digests)
}

async fn hash_file(path: &Path, firmware: &Firmware) -> Result<Digests, FetchError> {
    let mut file = tokio::fs::File::open(path).await.map_err(io(path))?;
    let mut hasher = hasher_for(firmware);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).await.map_err(io(path))?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// The local copy, reporting bytes and percent as it goes.
async fn copy_hashing(
    source: &Path,
    dest: &Path,
    firmware: &Firmware,
    progress: &Progress,
    bytes: &AtomicU64,
) -> Result<Digests, FetchError> {
    let copied = |n: u64, done: u64, total: u64| {
        bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(pct) = (done.min(total) * 100).checked_div(total) {
            // Percent only moves forward here; a misuse error cannot happen.
            let _ = progress.update(pct as u8);
        }
    };
    let algorithms = algorithms_for(firmware);
    Ok(download::copy_to_part(source, dest, firmware.size, algorithms, copied).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::Checksum;

    const MD5_HELLO: &str = "5d41402abc4b2a76b9719d911017c592";
    const SHA256_HELLO: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    /// `hello` staged as `<dest>.part` in `dir`, offered as `firmware`, through
    /// the hash and the check that decide whether it is committed.
    async fn stage_hello(dir: &Path, size: Option<u64>, md5: &str) -> Result<Digests, FetchError> {
        let dest = dir.join("dev.img");
        std::fs::write(part_path(&dest), b"hello").unwrap();
        let mut firmware = Firmware::new("t", "2.0", FirmwareLocation::File(dest.clone()));
        firmware.size = size;
        firmware.checksums = vec![Checksum::new(ChecksumAlgorithm::Md5, md5).unwrap()];
        let hashed = hash_file(&part_path(&dest), &firmware).await;
        commit_checked(hashed, &firmware, &dest).await
    }

    #[tokio::test]
    async fn size_and_checksum_decide_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dev.img");
        let digests = stage_hello(dir.path(), Some(5), MD5_HELLO).await.unwrap();
        assert_eq!(digests.length, 5);
        assert_eq!(digests.get(ChecksumAlgorithm::Sha256), Some(SHA256_HELLO));
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert!(!part_path(&dest).exists());
    }

    /// A size other than the source's is refused although the checksum matches
    /// (a truncated image can carry the checksum of what arrived), and the
    /// partial file goes, so the next attempt starts over.
    #[tokio::test]
    async fn another_size_is_refused_and_the_partial_file_removed() {
        for size in [4, 6] {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("dev.img");
            let err = stage_hello(dir.path(), Some(size), MD5_HELLO)
                .await
                .unwrap_err();
            assert!(
                matches!(err, FetchError::Size { expected, actual: 5 } if expected == size),
                "{err}"
            );
            assert!(!dest.exists() && !part_path(&dest).exists(), "{size}");
        }
        // No size from the source: the checksum alone decides.
        let dir = tempfile::tempdir().unwrap();
        stage_hello(dir.path(), None, MD5_HELLO).await.unwrap();
    }

    #[tokio::test]
    async fn a_wrong_checksum_is_refused_and_the_partial_file_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dev.img");
        let err = stage_hello(dir.path(), Some(5), &"0".repeat(32))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Checksum(_)), "{err}");
        assert!(!dest.exists() && !part_path(&dest).exists());
    }

    /// `fetch_and_verify` of `firmware` for device `dev` of type `t` into
    /// `<dir>/downloads`, images at most `max` bytes; the percent reached and
    /// the bytes counted.
    async fn fetch_local(
        dir: &Path,
        firmware: &Firmware,
        max: Option<u64>,
    ) -> (Result<VerifiedImage, FetchError>, Option<u8>, u64) {
        let downloads = dir.join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        let downloader = Downloader::new(crate::download::DownloadConfig {
            max_image_size: max,
            ..Default::default()
        })
        .unwrap();
        let (trust, bytes) = (TrustPolicy::default(), AtomicU64::new(0));
        let ctx = FetchContext {
            downloads: &downloads,
            downloader: &downloader,
            trust: &trust,
            bytes: &bytes,
        };
        let (tx, _rx) = tokio::sync::broadcast::channel(64);
        let progress = Progress::new("dev", "2.0", tx);
        progress
            .define_sequence(&[crate::progress::ProgressStep::Downloading])
            .unwrap();
        progress
            .advance_to(crate::progress::ProgressStep::Downloading)
            .unwrap();
        let result = fetch_and_verify(&ctx, firmware, "dev", "t", &progress).await;
        (result, progress.percent(), bytes.load(Ordering::Relaxed))
    }

    /// `hello` as a local image of type `t` in `dir`, with a second file `image2`.
    fn local_hello(dir: &Path, part_md5: &str) -> Firmware {
        std::fs::write(dir.join("fw.bin"), b"hello").unwrap();
        std::fs::write(dir.join("fw2.bin"), b"hello").unwrap();
        let mut firmware = Firmware::new("t", "2.0", FirmwareLocation::File(dir.join("fw.bin")));
        firmware.size = Some(5);
        firmware.parts = vec![crate::model::FirmwarePart {
            name: "image2".into(),
            location: FirmwareLocation::File(dir.join("fw2.bin")),
            size: Some(5),
            checksums: vec![Checksum::new(ChecksumAlgorithm::Md5, part_md5).unwrap()],
        }];
        firmware
    }

    #[tokio::test]
    async fn a_local_image_and_its_part_are_copied_verified_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (image, percent, bytes) =
            fetch_local(dir.path(), &local_hello(dir.path(), MD5_HELLO), None).await;
        let image = image.unwrap();
        assert_eq!(
            image.path(),
            image_path(&dir.path().join("downloads"), "dev")
        );
        assert_eq!(std::fs::read(image.path()).unwrap(), b"hello");
        assert_eq!(
            image.digests().get(ChecksumAlgorithm::Sha256),
            Some(SHA256_HELLO)
        );
        assert_eq!(image.parts().len(), 1);
        assert_eq!(std::fs::read(image.parts()[0].path()).unwrap(), b"hello");
        assert_eq!((percent, bytes), (Some(100), 10));
    }

    /// Nothing is copied for another device type, a part name that is not a
    /// plain file name, or an image over `max_image_size`; a part that fails
    /// its check takes the image with it.
    #[tokio::test]
    async fn what_is_refused_leaves_nothing_in_the_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let downloads = dir.path().join("downloads");
        let good = local_hello(dir.path(), MD5_HELLO);
        let mut other_type = good.clone();
        other_type.device_type = "u".into();
        let mut bad_name = good.clone();
        bad_name.parts[0].name = "../image2".into();
        let bad_part = local_hello(dir.path(), &"0".repeat(32));
        let cases = [
            (other_type, None, "firmware is for device type \"u\""),
            (bad_name, None, "part name \"../image2\""),
            (
                good.clone(),
                Some(4),
                "image of 5 bytes exceeds max_image_size 4",
            ),
            (bad_part, None, "MD5 mismatch"),
        ];
        for (firmware, max, why) in cases {
            let (result, _, _) = fetch_local(dir.path(), &firmware, max).await;
            let err = result.map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(why), "{why}: {err}");
            assert_eq!(std::fs::read_dir(&downloads).unwrap().count(), 0, "{why}");
        }
        // At the limit is not over it.
        let (result, _, _) = fetch_local(dir.path(), &good, Some(5)).await;
        result.unwrap();
    }

    /// A source's own fetch: writes `hello` in two reported steps.
    struct Hello;

    #[async_trait::async_trait]
    impl crate::model::RemoteFetch for Hello {
        async fn fetch(
            &self,
            part: &Path,
            report: crate::model::FetchReport<'_>,
        ) -> Result<(), crate::model::FetchFailure> {
            report(2, Some(5));
            std::fs::write(part, b"hello").unwrap();
            report(5, Some(5));
            Ok(())
        }
    }

    /// A source's own fetch is verified like a download, and refused before it
    /// starts when the source's size is over `max_image_size` (at it is fine).
    #[tokio::test]
    async fn a_remote_image_is_verified_and_held_to_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let remote = crate::model::RemoteImage {
            name: "test:hello".into(),
            fetcher: std::sync::Arc::new(Hello),
        };
        let mut firmware = Firmware::new("t", "2.0", FirmwareLocation::Remote(remote));
        firmware.size = Some(5);
        let sha256 = Checksum::new(ChecksumAlgorithm::Sha256, SHA256_HELLO).unwrap();
        firmware.checksums = vec![sha256];
        let (image, percent, _) = fetch_local(dir.path(), &firmware, Some(5)).await;
        assert_eq!(std::fs::read(image.unwrap().path()).unwrap(), b"hello");
        assert_eq!(percent, Some(100));
        std::fs::remove_dir_all(dir.path().join("downloads")).unwrap();
        let (image, _, _) = fetch_local(dir.path(), &firmware, Some(4)).await;
        let err = image.map(|_| ()).unwrap_err().to_string();
        assert!(
            err.contains("image of 5 bytes exceeds max_image_size 4"),
            "{err}"
        );
    }

    /// A part name becomes part of a file name in the state directory.
    #[test]
    fn part_names_must_be_plain_file_names() {
        for ok in ["image2", "user2.bin", "A-b_c.1"] {
            assert!(plain_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "..", "../x", "a/b", "a b", "ü"] {
            assert!(!plain_name(bad), "{bad}");
        }
    }

    /// A device's image and its further files sit side by side, named after the
    /// device, and are removed together.
    #[test]
    fn a_devices_images_are_removed_together() {
        let dir = tempfile::tempdir().unwrap();
        let image = image_path(dir.path(), "esp1");
        let part = part_path_for(dir.path(), "esp1", "image2");
        assert_eq!(image, dir.path().join("esp1.img"));
        assert_eq!(part, dir.path().join("esp1.image2.img"));
        let other = image_path(dir.path(), "esp2");
        for p in [&image, &part, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        let mut firmware = Firmware::new("esp", "2.0", FirmwareLocation::File(image.clone()));
        firmware.parts = vec![crate::model::FirmwarePart {
            name: "image2".into(),
            location: FirmwareLocation::File(part.clone()),
            size: None,
            checksums: vec![],
        }];
        remove_images(dir.path(), "esp1", &firmware);
        assert!(!image.exists() && !part.exists());
        assert!(other.exists(), "another device's image went too");
    }

    /// A staged image is re-checked against the SHA-256 recorded when it was
    /// verified: one byte changed on disk and it is refused.
    #[tokio::test]
    async fn reverify_refuses_a_staged_image_changed_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = image_path(dir.path(), "dev");
        std::fs::write(&path, b"hello").unwrap();
        let firmware = Firmware::new("t", "2.0", FirmwareLocation::File(path.clone()));
        let image = reverify(dir.path(), "dev", &firmware, SHA256_HELLO, &[])
            .await
            .unwrap();
        assert_eq!(
            image.digests().get(ChecksumAlgorithm::Sha256),
            Some(SHA256_HELLO)
        );
        std::fs::write(&path, b"hellO").unwrap();
        let err = reverify(dir.path(), "dev", &firmware, SHA256_HELLO, &[])
            .await
            .unwrap_err();
        assert!(err.to_string().contains(SHA256_HELLO), "{err}");
    }

    /// A staged further file is re-checked against its own recorded SHA-256,
    /// found by name; one not recorded is missing.
    #[tokio::test]
    async fn reverify_checks_each_part_against_its_own_record() {
        let dir = tempfile::tempdir().unwrap();
        let firmware = local_hello(dir.path(), MD5_HELLO);
        std::fs::write(image_path(dir.path(), "dev"), b"hello").unwrap();
        std::fs::write(part_path_for(dir.path(), "dev", "image2"), b"hello").unwrap();
        let record = |name: &str, sha256: &str| crate::store::StagedPart {
            name: name.into(),
            sha256: sha256.into(),
        };
        let wrong = "0".repeat(64);
        let staged = [record("other", &wrong), record("image2", SHA256_HELLO)];
        let image = reverify(dir.path(), "dev", &firmware, SHA256_HELLO, &staged)
            .await
            .unwrap();
        assert_eq!(
            image.parts()[0].path(),
            part_path_for(dir.path(), "dev", "image2")
        );
        let err = reverify(dir.path(), "dev", &firmware, SHA256_HELLO, &staged[..1])
            .await
            .unwrap_err();
        assert!(
            matches!(err, FetchError::PartMissing(ref n) if n == "image2"),
            "{err}"
        );
    }
}
