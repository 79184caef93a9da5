//! The endpoint's answers as hyper responses: a whole body (JSON, text) or a
//! stream (server-sent events), behind one body type.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::StatusCode;
use hyper::header::{self, HeaderValue};

/// Every answer's body: whole or streamed, never failing.
pub type Body = BoxBody<Bytes, Infallible>;
pub type Response = hyper::Response<Body>;

/// `value` as JSON with `code`; a value that cannot be written as JSON (a bug)
/// is a 500 that says so.
pub fn json(code: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => with(code, "application/json", Full::new(body.into()).boxed()),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("cannot encode the answer as JSON: {e}"),
        ),
    }
}

/// `body` as `content_type` with `code`.
pub fn reply(code: StatusCode, content_type: &'static str, body: String) -> Response {
    with(code, content_type, Full::new(body.into()).boxed())
}

/// `code` without a body.
pub fn empty(code: StatusCode) -> Response {
    let mut answer = Response::new(Empty::new().boxed());
    *answer.status_mut() = code;
    answer
}

/// `body` as `content_type` with `code`.
pub fn with(code: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut answer = Response::new(body);
    *answer.status_mut() = code;
    answer
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    answer
}
