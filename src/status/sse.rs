//! `GET /events`: server-sent events, one per progress event (`event:` is the
//! kind: `sequence`, `step`, `percent`, `pending`, `finished`; `data:` JSON),
//! and a comment line every [`KEEP_ALIVE`] without an event so that proxies and
//! clients see the stream is alive.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::StatusCode;
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::respond::{Response, with};
use crate::progress::{Outcome, ProgressEvent, ProgressKind};

/// A comment after this long without an event.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The event stream of `events` until it closes or `shutdown` (an open stream
/// must not hold up the shutdown).
pub fn events(events: broadcast::Receiver<ProgressEvent>, shutdown: CancellationToken) -> Response {
    let stream = futures_util::stream::unfold(events, |mut rx| async move {
        loop {
            let text = tokio::select! {
                received = rx.recv() => match received {
                    Ok(ev) => format!(
                        "event: {}\ndata: {}\n\n",
                        event_name(&ev.kind),
                        event_json(&ev)
                    ),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                },
                () = tokio::time::sleep(KEEP_ALIVE) => ":\n\n".to_string(),
            };
            return Some((Ok(Frame::data(Bytes::from(text))), rx));
        }
    })
    .take_until(shutdown.cancelled_owned());
    let body = BodyExt::boxed(StreamBody::new(stream));
    let mut answer = with(StatusCode::OK, "text/event-stream", body);
    answer
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    answer
}

/// A progress event as the JSON of an SSE `data:` line.
pub fn event_json(ev: &ProgressEvent) -> serde_json::Value {
    let mut v = json!({
        "device_id": ev.device_id,
        "firmware_version": ev.firmware_version,
        "kind": event_name(&ev.kind),
    });
    match &ev.kind {
        ProgressKind::Sequence(steps) => v["steps"] = json!(steps),
        ProgressKind::Step(step) => v["step"] = json!(step),
        ProgressKind::Percent(step, pct) => {
            v["step"] = json!(step);
            v["percent"] = json!(pct);
        }
        ProgressKind::Pending => {}
        ProgressKind::Finished(o) => {
            v["outcome"] = json!(crate::logging::outcome_name(o));
            if let Outcome::Failed(reason) = o {
                v["reason"] = json!(reason);
            }
        }
    }
    v
}

fn event_name(kind: &ProgressKind) -> &'static str {
    match kind {
        ProgressKind::Sequence(_) => "sequence",
        ProgressKind::Step(_) => "step",
        ProgressKind::Percent(..) => "percent",
        ProgressKind::Pending => "pending",
        ProgressKind::Finished(_) => "finished",
    }
}
