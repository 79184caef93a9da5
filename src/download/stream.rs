//! Step 3 of an attempt: the body goes to `<dest>.part` through the disk writer
//! ([`super::writer`]), every digest updated in the same pass, with a stall
//! timeout on the network side and `max_image_size` enforced as bytes arrive.

use futures_util::StreamExt;
use reqwest::header;

use super::partial::{self, Partial, meta_path, part_path};
use super::request::{Body, header_str, network};
use super::writer::{self, Writer};
use super::{DownloadError, DownloadRequest, Downloader, ProgressFn, limits};
use crate::checksum::{ChecksumAlgorithm, Digests, MultiHasher};

/// Streams `body` into the partial file from `body.start` on and returns the
/// digests of the whole file (the bytes already on disk included).
pub(super) async fn stream(
    dl: &Downloader,
    req: &DownloadRequest<'_>,
    body: Body,
    algorithms: &[ChecksumAlgorithm],
    progress: ProgressFn<'_>,
) -> Result<Digests, DownloadError> {
    let Body {
        response,
        start,
        total,
    } = body;
    let record = Partial {
        url: req.url.to_string(),
        etag: header_str(response.headers(), header::ETAG),
        last_modified: header_str(response.headers(), header::LAST_MODIFIED),
        total,
        durable: start,
        boot_id: partial::boot_id(),
    };
    partial::save(req.dest, &record).map_err(|source| DownloadError::Io {
        path: meta_path(req.dest),
        source,
    })?;

    // Digests of what is already on disk, then the rest as it arrives.
    let hasher = if start > 0 {
        writer::hash_prefix(&part_path(req.dest), start, algorithms).await?
    } else {
        MultiHasher::new(algorithms.iter().copied())
    };
    let mut sink = Writer::start(req.dest.to_path_buf(), start, hasher, record)?;
    let outcome = receive(dl, req, response, &mut sink, start, total, progress).await;
    // A disk error is the root cause of anything that follows it.
    let digests = match (sink.finish().await, outcome) {
        (Err(disk), _) => return Err(disk),
        (Ok(_), Err(e)) => {
            if matches!(
                e,
                DownloadError::TooLarge { .. } | DownloadError::Overrun { .. }
            ) {
                partial::discard(req.dest);
            }
            return Err(e);
        }
        (Ok(d), Ok(())) => d,
    };
    if let Some(expected) = total
        && digests.length < expected
    {
        return Err(DownloadError::Truncated {
            url: req.url.to_string(),
            expected,
            got: digests.length,
        });
    }
    Ok(digests)
}

/// Hands the body's chunks to `sink` until the body ends, stalls, trickles,
/// passes its size limit or the free-space reserve, fails, or the writer stops
/// (then `sink.finish` says why).
async fn receive(
    dl: &Downloader,
    req: &DownloadRequest<'_>,
    response: reqwest::Response,
    sink: &mut Writer,
    start: u64,
    total: Option<u64>,
    progress: ProgressFn<'_>,
) -> Result<(), DownloadError> {
    let url = req.url;
    let mut received = start;
    progress(received, total);
    let mut body = response.bytes_stream();
    let stall = dl.config.stall_timeout;
    let ceiling = limits::ceiling(total, dl.config.max_image_size);
    let mut rate = limits::RateCheck::new(dl.config.min_rate, stall, received);
    let mut space_checked = received;
    loop {
        let wait = stall.min(rate.until_due().max(std::time::Duration::from_millis(10)));
        let next = match tokio::time::timeout(wait, body.next()).await {
            Ok(next) => next,
            Err(_) if wait < stall => {
                rate.check(url, received)?;
                continue;
            }
            Err(_) => {
                return Err(DownloadError::Stalled {
                    url: url.to_string(),
                    after: stall,
                    at: received,
                });
            }
        };
        let chunk = match next {
            None => return Ok(()),
            Some(Err(e)) => return Err(network(url, e)),
            Some(Ok(chunk)) => chunk,
        };
        received += chunk.len() as u64;
        check_ceiling(url, ceiling, received)?;
        if received - space_checked >= limits::SPACE_CHECK_EVERY {
            space_checked = received;
            let dir = crate::persist::parent_dir(req.dest);
            let still = total.map_or(0, |t| t.saturating_sub(received));
            super::check_free_space(dir, still, dl.config.free_space_reserve)?;
        }
        rate.check(url, received)?;
        if sink.write(&chunk).await.is_err() {
            // The writer stopped; `finish` says why.
            return Ok(());
        }
        progress(received, total);
    }
}

/// Stops a body the moment it passes the smallest size limit.
fn check_ceiling(
    url: &str,
    ceiling: Option<(u64, &'static str)>,
    received: u64,
) -> Result<(), DownloadError> {
    match ceiling {
        Some((limit, what)) if received > limit => Err(DownloadError::Overrun {
            url: url.to_string(),
            limit,
            what,
        }),
        _ => Ok(()),
    }
}
