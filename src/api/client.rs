//! [`ApiClient`]: one server's API (its origin, default headers, credentials) on
//! a reqwest client with the download settings' TLS trust and timeouts, which
//! does not follow redirects itself: [`ApiRequest::send`] does, so every hop is
//! checked (`https_only`, at most 10) and only hops to the configured origin get
//! the credentials.

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use reqwest::header::{self, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{ApiError, error_chain};
use super::redact::Redactor;
use crate::download::retry::{MAX_RETRY_AFTER, retry_after};
use crate::download::{DownloadConfig, DownloadError, Downloader};

/// The largest answer read unless a request allows more.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Redirects followed per request.
const MAX_REDIRECTS: usize = 10;
/// Error answers are read this far for their message.
const MAX_ERROR_BODY: usize = 16 * 1024;
/// Characters of a server's error text kept in an error.
const MAX_DETAIL: usize = 200;

type Headers = Vec<(HeaderName, HeaderValue)>;

/// A client of one server's API. Cheap to clone.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    /// Sent with every request.
    headers: Headers,
    /// Sent only to `base`'s origin; their values are secrets.
    credentials: Headers,
    /// The same, spelled as given, for downloads (see `credentials_for`).
    credentials_as_given: Vec<(String, String)>,
    redactor: Redactor,
    max_body: usize,
    https_only: bool,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", self.redactor.apply(v.to_str().unwrap_or("?"))))
            .chain(self.credentials.iter().map(|(n, _)| format!("{n}: ***")))
            .collect();
        f.debug_struct("ApiClient")
            .field("base", &self.redactor.url(&self.base))
            .field("headers", &headers)
            .field("max_body", &self.max_body)
            .finish()
    }
}

fn header_value(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::try_from(name).map_err(|_| format!("bad header name {name:?}"))?;
    let mut value =
        HeaderValue::try_from(value).map_err(|_| format!("bad value for header {name}"))?;
    value.set_sensitive(true);
    Ok((name, value))
}

impl ApiClient {
    /// A client of the API at `base` (its origin is where credentials go) with
    /// `download`'s TLS trust, client certificate, `https_only` and timeouts.
    pub fn new(download: &DownloadConfig, base: &str) -> Result<ApiClient, ApiError> {
        let base = Url::parse(base).map_err(|e| ApiError::Request {
            target: "base URL".into(),
            message: format!("bad URL: {e}"),
        })?;
        let redactor = Redactor::default();
        let http = Downloader::client_builder(download)
            .and_then(|b| {
                b.redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| DownloadError::Config(format!("HTTP client: {e}")))
            })
            .map_err(|e| ApiError::Request {
                target: redactor.url(&base),
                message: e.to_string(),
            })?;
        Ok(ApiClient {
            http,
            base,
            headers: Vec::new(),
            credentials: Vec::new(),
            credentials_as_given: Vec::new(),
            redactor,
            max_body: DEFAULT_MAX_BODY,
            https_only: download.https_only,
        })
    }

    /// Sends `name: value` with every request (not a secret: see `credential`).
    pub fn header(mut self, name: HeaderName, value: &'static str) -> ApiClient {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    /// Sends `name: value` with every request to the base's origin, never
    /// elsewhere; the value is hidden from everything printed.
    pub fn credential(mut self, name: &str, value: &str) -> Result<ApiClient, ApiError> {
        let pair = header_value(name, value).map_err(|message| ApiError::Request {
            target: self.redactor.url(&self.base),
            message,
        })?;
        self.redactor.add(value);
        self.credentials.push(pair);
        self.credentials_as_given
            .push((name.to_string(), value.to_string()));
        Ok(self)
    }

    /// The largest answer read (default [`DEFAULT_MAX_BODY`]).
    pub fn max_body(mut self, limit: usize) -> ApiClient {
        self.max_body = limit;
        self
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The base URL with `segments` appended, each percent-encoded as one path
    /// segment.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// True when `url` has the base's scheme, host and port.
    pub fn is_origin(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }

    /// The credential headers for a download from `url`: all of them on the
    /// base's origin, none elsewhere (a CDN must not see them).
    pub fn credentials_for(&self, url: &str) -> Vec<(String, String)> {
        match Url::parse(url) {
            Ok(u) if self.is_origin(&u) => self.credentials_as_given.clone(),
            _ => Vec::new(),
        }
    }

    /// A request to `url` (absolute).
    pub fn request(&self, method: Method, url: &str) -> ApiRequest<'_> {
        ApiRequest {
            client: self,
            method,
            url: url.to_string(),
            body: None,
            problem: None,
            credentials: self.credentials.clone(),
            redactor: self.redactor.clone(),
            timeout: None,
            max_body: self.max_body,
            shown_as: None,
            if_none_match: None,
        }
    }

    pub fn get(&self, url: &str) -> ApiRequest<'_> {
        self.request(Method::GET, url)
    }
}

/// One request being put together; [`ApiRequest::send`] sends it.
pub struct ApiRequest<'a> {
    client: &'a ApiClient,
    method: Method,
    /// As given; parsed by `send`.
    url: String,
    body: Option<Vec<u8>>,
    /// Why the request cannot be sent (reported by `send`).
    problem: Option<String>,
    credentials: Headers,
    redactor: Redactor,
    timeout: Option<Duration>,
    max_body: usize,
    /// How errors name the request instead of `METHOD url`.
    shown_as: Option<String>,
    /// The validator of the answer held from last time (a conditional GET).
    if_none_match: Option<String>,
}

/// A 2xx answer, read whole (within the limit), or a 304 to a conditional GET
/// (empty body: the caller's copy is still current).
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub body: Bytes,
    /// The answer's `ETag`, for the next conditional GET.
    pub etag: Option<String>,
    /// `METHOD url` as shown in errors.
    target: String,
}

impl ApiResponse {
    /// The server answered 304 Not Modified to `If-None-Match`.
    pub fn not_modified(&self) -> bool {
        self.status == StatusCode::NOT_MODIFIED
    }

    /// The body as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| self.unexpected(e.to_string()))
    }

    /// A [`ApiError::Decode`] for this answer: it is not what `problem` expected.
    pub fn unexpected(&self, problem: String) -> ApiError {
        ApiError::Decode {
            target: self.target.clone(),
            status: self.status,
            message: problem,
        }
    }
}

/// Why [`read_capped`] gave no body.
pub enum ReadError {
    TooLarge,
    Network(reqwest::Error),
}

/// The body, failing as soon as it exceeds `limit` bytes (never allocating more).
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, ReadError> {
    let announced = response.content_length().unwrap_or(0);
    if announced > limit as u64 {
        return Err(ReadError::TooLarge);
    }
    let mut body = BytesMut::with_capacity(announced as usize);
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Network)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Where a redirect answer points, if it is one that can be followed.
fn redirect_target(response: &reqwest::Response, from: &Url) -> Option<Url> {
    let followed = [301, 302, 303, 307, 308];
    if !followed.contains(&response.status().as_u16()) {
        return None;
    }
    let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
    from.join(location).ok()
}

/// The method and body of the next hop: 303 (and 301/302 after a POST) turn
/// into a GET without a body, as browsers and reqwest do; 307/308 keep both.
fn after_redirect(
    status: StatusCode,
    method: Method,
    body: Option<Vec<u8>>,
) -> (Method, Option<Vec<u8>>) {
    let to_get = match status.as_u16() {
        303 => method != Method::HEAD,
        301 | 302 => method == Method::POST,
        _ => false,
    };
    if to_get {
        (Method::GET, None)
    } else {
        (method, body)
    }
}

/// A server's error text in one short line: its JSON `message`, else the text.
fn describe(body: &[u8], redactor: &Redactor) -> Option<String> {
    let json_message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string));
    let text = json_message.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let line: String = redactor
        .apply(&text)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DETAIL)
        .collect();
    let line = line.trim();
    (!line.is_empty()).then(|| line.to_string())
}

impl ApiRequest<'_> {
    /// Sends `body` as JSON (`Content-Type: application/json`).
    pub fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Self {
        match serde_json::to_vec(body) {
            Ok(b) => self.body = Some(b),
            Err(e) => self.problem = Some(format!("cannot encode the body: {e}")),
        }
        self
    }

    /// Adds a credential header for this request only (same rules as
    /// [`ApiClient::credential`]).
    pub fn credential(mut self, name: &str, value: &str) -> Self {
        match header_value(name, value) {
            Ok(pair) => self.credentials.push(pair),
            Err(message) => self.problem = Some(message),
        }
        self.redactor.add(value);
        self
    }

    /// Hides `secret` (a token in the URL) from the errors of this request.
    pub fn secret(mut self, secret: &str) -> Self {
        self.redactor.add(secret);
        self
    }

    /// Names the request as `name` in errors instead of `METHOD url` (secrets
    /// are still hidden).
    pub fn shown_as(mut self, name: String) -> Self {
        self.shown_as = Some(name);
        self
    }

    /// Limits each hop of this request, start to end.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Makes this a conditional GET: a 304 answer is success (see
    /// [`ApiResponse::not_modified`]).
    pub fn if_none_match(mut self, etag: Option<&str>) -> Self {
        self.if_none_match = etag.map(str::to_string);
        self
    }

    /// The largest answer read for this request.
    pub fn max_body(mut self, limit: usize) -> Self {
        self.max_body = limit;
        self
    }

    /// Sends the request (following redirects) and reads the answer; any 2xx
    /// is success.
    pub async fn send(self) -> Result<ApiResponse, ApiError> {
        let url = match Url::parse(&self.url) {
            Ok(u) => u,
            Err(e) => {
                let target = format!("{} {}", self.method, self.redactor.apply(&self.url));
                return Err(self.refused(target, &format!("bad URL: {e}")));
            }
        };
        let target = match &self.shown_as {
            Some(name) => self.redactor.apply(name),
            None => format!("{} {}", self.method, self.redactor.url(&url)),
        };
        if let Some(problem) = &self.problem {
            return Err(self.refused(target, problem));
        }
        let response = self.follow(url, &target).await?;
        let status = response.status();
        let etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if status == StatusCode::NOT_MODIFIED && self.if_none_match.is_some() {
            return Ok(ApiResponse {
                status,
                body: Bytes::new(),
                etag,
                target,
            });
        }
        if !status.is_success() {
            return Err(self.status_error(response, target).await);
        }
        match read_capped(response, self.max_body).await {
            Ok(body) => Ok(ApiResponse {
                status,
                body,
                etag,
                target,
            }),
            Err(ReadError::TooLarge) => Err(ApiError::TooLarge {
                target,
                limit: self.max_body,
            }),
            Err(ReadError::Network(e)) => Err(self.network(target, e, "reading the answer: ")),
        }
    }

    /// Sends the request and decodes a JSON answer.
    pub async fn fetch_json<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        self.send().await?.json()
    }

    fn refused(&self, target: String, message: &str) -> ApiError {
        ApiError::Request {
            target,
            message: self.redactor.apply(message),
        }
    }

    fn network(&self, target: String, e: reqwest::Error, context: &str) -> ApiError {
        let permanent = e.is_builder();
        let message = format!(
            "{context}{}",
            self.redactor.apply(&error_chain(&e.without_url()))
        );
        if permanent {
            ApiError::Request { target, message }
        } else {
            ApiError::Network { target, message }
        }
    }

    /// Sends hop after hop until an answer that is not a redirect.
    async fn follow(&self, mut url: Url, target: &str) -> Result<reqwest::Response, ApiError> {
        let mut method = self.method.clone();
        let mut body = self.body.clone();
        for _ in 0..=MAX_REDIRECTS {
            let response = self
                .hop(&method, &url, body.clone())
                .await
                .map_err(|e| self.network(target.to_string(), e, ""))?;
            let Some(next) = redirect_target(&response, &url) else {
                return Ok(response);
            };
            if self.client.https_only && next.scheme() != "https" {
                let shown = self.redactor.url(&next);
                let message = format!("refusing redirect to {shown}: https_only is set");
                return Err(self.refused(target.to_string(), &message));
            }
            (method, body) = after_redirect(response.status(), method, body);
            url = next;
        }
        Err(self.refused(target.to_string(), "too many redirects"))
    }

    /// One HTTP exchange; the credentials go only to the base's origin.
    async fn hop(
        &self,
        method: &Method,
        url: &Url,
        body: Option<Vec<u8>>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut request = self.client.http.request(method.clone(), url.clone());
        for (name, value) in &self.client.headers {
            request = request.header(name, value);
        }
        if self.client.is_origin(url) {
            for (name, value) in &self.credentials {
                request = request.header(name, value);
            }
        }
        if let Some(body) = body {
            if !self
                .client
                .headers
                .iter()
                .any(|(n, _)| n == header::CONTENT_TYPE)
            {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            request = request.body(body);
        }
        if let Some(limit) = self.timeout {
            request = request.timeout(limit);
        }
        if let Some(etag) = &self.if_none_match {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        request.send().await
    }

    async fn status_error(&self, response: reqwest::Response, target: String) -> ApiError {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now(), MAX_RETRY_AFTER));
        let detail = match read_capped(response, MAX_ERROR_BODY).await {
            Ok(body) => describe(&body, &self.redactor),
            Err(_) => None,
        };
        ApiError::Status {
            target,
            status,
            retry_after,
            detail,
        }
    }
}
