//! Step 1 of an attempt: what it starts from. Is there a partial download worth
//! resuming, how big is the file (the request, the partial record, else a HEAD
//! request), and does it fit (`max_image_size`, free space)?

use std::path::Path;

use reqwest::header;

use super::partial::{self, Partial, part_path};
use super::request::header_str;
use super::{DownloadError, DownloadRequest, Downloader};
use crate::checksum::ChecksumAlgorithm;

/// What an attempt starts from.
pub(super) struct Plan {
    /// The partial download to continue, if any.
    pub resume: Option<Resume>,
    /// The expected total size, if known.
    pub total: Option<u64>,
    /// Every digest to compute: the expected ones and the `also_hash` ones.
    pub algorithms: Vec<ChecksumAlgorithm>,
}

/// A partial download that can be continued.
pub(super) struct Resume {
    pub record: Partial,
    /// How many bytes of `<dest>.part` are trusted (more than zero).
    pub len: u64,
}

/// Decides where the attempt starts; a partial download that cannot be resumed
/// is discarded. Refuses a file that is known to be too large or not to fit.
pub(super) async fn plan(
    dl: &Downloader,
    req: &DownloadRequest<'_>,
) -> Result<Plan, DownloadError> {
    let algorithms = req
        .checksums
        .iter()
        .map(|c| c.algorithm)
        .chain(req.also_hash.iter().copied())
        .collect();
    let resume = resumable(req);
    if resume.is_none() {
        partial::discard(req.dest);
    }
    let mut total = req.size.or(resume.as_ref().and_then(|r| r.record.total));
    if total.is_none() && resume.is_none() {
        total = head_length(dl, req).await;
    }
    let have = resume.as_ref().map_or(0, |r| r.len);
    check_room(dl, req.dest, total, have)?;
    Ok(Plan {
        resume,
        total,
        algorithms,
    })
}

/// The partial download left for this URL, when the server can prove the file
/// unchanged (a validator) and some of its bytes are trusted.
fn resumable(req: &DownloadRequest<'_>) -> Option<Resume> {
    let record = partial::load(req.dest).filter(|p| p.url == req.url && p.validator().is_some())?;
    let on_disk = std::fs::metadata(part_path(req.dest))
        .map(|m| m.len())
        .unwrap_or(0);
    let len = record.trusted_len(on_disk);
    (len > 0).then_some(Resume { record, len })
}

/// The size from a HEAD request (the ESP8266 FOTA guide's custom-server rule);
/// `None` when the server does not say.
async fn head_length(dl: &Downloader, req: &DownloadRequest<'_>) -> Option<u64> {
    let mut request = dl.client.head(req.url);
    for (name, value) in req.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = request.send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    header_str(response.headers(), header::CONTENT_LENGTH)?
        .parse()
        .ok()
}

/// Refuses before downloading when the image cannot fit (also called with the
/// size a GET announces, for servers that refuse HEAD).
pub(super) fn check_room(
    dl: &Downloader,
    dest: &Path,
    total: Option<u64>,
    have: u64,
) -> Result<(), DownloadError> {
    if let (Some(total), Some(max)) = (total, dl.config.max_image_size)
        && total > max
    {
        return Err(DownloadError::TooLarge { size: total, max });
    }
    let dir = crate::persist::parent_dir(dest);
    let needed = total.map_or(0, |t| t.saturating_sub(have));
    super::check_free_space(dir, needed, dl.config.free_space_reserve)
}
