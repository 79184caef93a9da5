//! Step 2 of an attempt: the GET (with `Range` + `If-Range` when resuming) and
//! what its answer means: a body to stream from some offset, "you already have
//! everything", or an error (retryable or not, with the server's `Retry-After`).

use std::time::SystemTime;

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};

use super::plan::{Plan, Resume};
use super::{DownloadError, DownloadRequest, Downloader, partial, retry};

/// What the server answered.
pub(super) enum Reply {
    /// The body to write from byte `start` on.
    Body(Body),
    /// The range asked for starts at the end: everything is already on disk.
    Complete,
}

/// A body to stream.
pub(super) struct Body {
    pub response: reqwest::Response,
    /// Offset of the body's first byte in the file (0: the whole file).
    pub start: u64,
    /// The file's total size, if known.
    pub total: Option<u64>,
}

/// Sends the GET for `plan` and checks the answer, including the size it
/// announces against `max_image_size` and the expected size.
pub(super) async fn request(
    dl: &Downloader,
    req: &DownloadRequest<'_>,
    plan: &Plan,
) -> Result<Reply, DownloadError> {
    let mut request = dl.client.get(req.url);
    for (name, value) in req.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if let Some(Resume { record, len }) = &plan.resume {
        request = request
            .header(header::RANGE, format!("bytes={len}-"))
            .header(header::IF_RANGE, record.validator().unwrap_or_default());
    }
    let response = request.send().await.map_err(|e| network(req.url, e))?;
    let reply = interpret(req, plan, response)?;
    if let Reply::Body(body) = &reply {
        check_announced(dl, req, body.total)?;
        // The HEAD may have been refused: the GET's length is checked here.
        super::plan::check_room(dl, req.dest, body.total, body.start)?;
    }
    Ok(reply)
}

/// What the status (and `Content-Range`) of the answer mean for this plan.
fn interpret(
    req: &DownloadRequest<'_>,
    plan: &Plan,
    response: reqwest::Response,
) -> Result<Reply, DownloadError> {
    let url = req.url.to_string();
    match (response.status(), &plan.resume) {
        (StatusCode::PARTIAL_CONTENT, Some(Resume { len, .. })) => {
            let (from, all) =
                content_range(response.headers()).ok_or_else(|| DownloadError::Protocol {
                    url: url.clone(),
                    message: "206 without a valid Content-Range".into(),
                })?;
            if let Some(changed) = validator_changed(req.url, record_of(plan), response.headers()) {
                partial::discard(req.dest);
                return Err(changed);
            }
            if from != *len {
                partial::discard(req.dest);
                return Err(DownloadError::Protocol {
                    url,
                    message: format!("asked for bytes from {len}, got them from {from}"),
                });
            }
            let total = all.or(plan.total);
            Ok(Reply::Body(Body {
                response,
                start: from,
                total,
            }))
        }
        (StatusCode::OK, resume) => {
            if resume.is_some() {
                tracing::info!(url = %req.url, "server sent the whole file (changed, or no range support): starting over");
            }
            let total = response.content_length().or(req.size);
            Ok(Reply::Body(Body {
                response,
                start: 0,
                total,
            }))
        }
        (StatusCode::RANGE_NOT_SATISFIABLE, Some(Resume { record, len }))
            if record.total == Some(*len) =>
        {
            Ok(Reply::Complete)
        }
        (s, _) if s.is_success() => Err(DownloadError::Protocol {
            url,
            message: format!("unexpected status {s}"),
        }),
        (s, _) => {
            if s == StatusCode::RANGE_NOT_SATISFIABLE {
                partial::discard(req.dest);
            }
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::retry_after(v, SystemTime::now(), retry::MAX_RETRY_AFTER));
            Err(DownloadError::Http {
                url,
                status: s,
                retry_after,
            })
        }
    }
}

/// Refuses a body whose announced size is over `max_image_size` (discarding the
/// partial file) or differs from the expected size.
fn check_announced(
    dl: &Downloader,
    req: &DownloadRequest<'_>,
    total: Option<u64>,
) -> Result<(), DownloadError> {
    if let (Some(size), Some(max)) = (total, dl.config.max_image_size)
        && size > max
    {
        partial::discard(req.dest);
        return Err(DownloadError::TooLarge { size, max });
    }
    if let (Some(expected), Some(announced)) = (req.size, total)
        && expected != announced
    {
        return Err(DownloadError::Size {
            expected,
            actual: announced,
        });
    }
    Ok(())
}

fn record_of(plan: &Plan) -> Option<&partial::Partial> {
    plan.resume.as_ref().map(|r| &r.record)
}

/// A 206 must be a range of the file the partial one came from: a validator in
/// the answer that differs from the one sent in `If-Range` (a proxy or server
/// that ignores `If-Range`) means the bytes would be spliced onto another file.
fn validator_changed(
    url: &str,
    record: Option<&partial::Partial>,
    headers: &HeaderMap,
) -> Option<DownloadError> {
    let record = record?;
    let sent = record.validator()?;
    let etag = header_str(headers, header::ETAG);
    let last_modified = header_str(headers, header::LAST_MODIFIED);
    let got = if record.etag.as_deref() == Some(sent) {
        etag?
    } else {
        last_modified?
    };
    (got != sent).then(|| DownloadError::Changed {
        url: url.to_string(),
        sent: sent.to_string(),
        got,
    })
}

pub(super) fn network(url: &str, e: reqwest::Error) -> DownloadError {
    // The chain carries the useful part ("connection refused", "certificate ...").
    DownloadError::Network {
        url: url.to_string(),
        message: crate::api::error_chain(&e),
    }
}

pub(super) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `Content-Range: bytes FROM-TO/TOTAL` → (FROM, TOTAL if not `*`).
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (from, _to) = range.split_once('-')?;
    Some((from.trim().parse().ok()?, total.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, "bytes 100-199/1000".parse().unwrap());
        assert_eq!(content_range(&h), Some((100, Some(1000))));
        h.insert(header::CONTENT_RANGE, "bytes 5-9/*".parse().unwrap());
        assert_eq!(content_range(&h), Some((5, None)));
        h.insert(header::CONTENT_RANGE, "items 1-2/3".parse().unwrap());
        assert_eq!(content_range(&h), None);
    }
}
