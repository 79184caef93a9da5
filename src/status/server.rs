//! The HTTP server of the status endpoint (hyper): loopback TCP and optionally a
//! unix socket, both serving the same routes. Six routes need no framework; the
//! match in [`route`] is the routing table.
//!
//! - `GET /status` — [`super::Snapshot`] as JSON
//! - `GET /metrics` — Prometheus text
//! - `GET /events` — server-sent events, one per progress event (`event:` is the
//!   kind: `sequence`, `step`, `percent`, `pending`, `finished`; `data:` JSON)
//! - `POST /check`, `POST /devices/{id}/update`, `POST /devices/{id}/cancel` —
//!   actions: allowed on the unix socket (its file mode decides who may connect)
//!   or with `Authorization: Bearer <[status] token>`; `403` otherwise.
//!
//! Over TCP every request first passes [`super::host::HostGuard`] (`421` for a
//! foreign `Host`), and with `[status] allow_remote` reads need the token too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Tracker;
use super::listener::{Accept, Limits};
use super::respond::{Response, json, reply};
use crate::config::StatusConfig;
use crate::engine::Engine;
use crate::source::CancelOutcome;

pub(super) struct Shared {
    engine: Engine,
    tracker: Arc<Tracker>,
    token: Option<String>,
    shutdown: CancellationToken,
}

#[derive(Clone)]
pub(super) struct AppState {
    pub(super) shared: Arc<Shared>,
    /// Served on the unix socket: actions need no token.
    privileged: bool,
    /// TCP only: the `Host` headers answered.
    hosts: Option<super::host::HostGuard>,
    /// `[status] allow_remote`: reads need the token as actions do.
    token_for_reads: bool,
}

/// The running endpoint.
pub struct Endpoint {
    /// The TCP address it listens on (the actual port when 0 was asked for).
    pub tcp: Option<SocketAddr>,
    /// The unix socket it listens on.
    pub socket: Option<PathBuf>,
    tasks: JoinSet<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("status endpoint: cannot listen on {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("status endpoint: cannot listen on {}: {source}", path.display())]
    Unix {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Binds every configured listener (so that a bind error stops the start, before
/// READY=1) and serves until `shutdown`.
pub async fn start(
    config: &StatusConfig,
    engine: Engine,
    tracker: Arc<Tracker>,
    shutdown: CancellationToken,
) -> Result<Endpoint, EndpointError> {
    let shared = Arc::new(Shared {
        engine,
        tracker,
        token: config.token.clone(),
        shutdown: shutdown.clone(),
    });
    let mut tasks = JoinSet::new();
    let mut endpoint_tcp = None;
    let limits = Limits {
        max_connections: config.max_connections,
        header_timeout: config.header_timeout,
    };
    if let Some(addr) = config.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| EndpointError::Tcp { addr, source })?;
        endpoint_tcp = listener.local_addr().ok();
        let state = AppState {
            shared: shared.clone(),
            privileged: false,
            hosts: Some(super::host::HostGuard::new(
                config.listen,
                config.allow_remote,
            )),
            token_for_reads: config.allow_remote,
        };
        serve(&mut tasks, listener, state, limits, shutdown.clone());
    }
    if let Some(path) = &config.socket {
        let listener = bind_unix(path).map_err(|source| EndpointError::Unix {
            path: path.clone(),
            source,
        })?;
        let state = AppState {
            shared: shared.clone(),
            privileged: true,
            hosts: None,
            token_for_reads: false,
        };
        serve(&mut tasks, listener, state, limits, shutdown.clone());
    }
    Ok(Endpoint {
        tcp: endpoint_tcp,
        socket: config.socket.clone(),
        tasks,
    })
}

/// Binds the unix socket: a stale socket file of an earlier run is replaced;
/// mode 0660 lets the service's group connect.
fn bind_unix(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

impl Endpoint {
    /// Waits (briefly) for the servers to finish after shutdown and removes the
    /// unix socket file.
    pub async fn finish(mut self) {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(3), all)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Serves `state`'s routes on `listener` in `tasks` until `stop`, within `limits`.
fn serve<L: Accept>(
    tasks: &mut JoinSet<()>,
    listener: L,
    state: AppState,
    limits: Limits,
    stop: CancellationToken,
) {
    let app = move |request| handle(state.clone(), request);
    tasks.spawn(super::listener::serve(listener, app, limits, stop));
}

/// One request: [`gate`], then [`route`].
async fn handle(s: AppState, request: Request<Incoming>) -> Response {
    if let Some(refused) = gate(&s, request.headers()) {
        return refused;
    }
    route(
        &s,
        request.method(),
        request.uri().path(),
        request.headers(),
    )
}

/// The routing table. A known path asked with another method gets 405 and the
/// methods it allows; HEAD is answered as GET (hyper leaves the body out).
fn route(s: &AppState, method: &Method, path: &str, headers: &HeaderMap) -> Response {
    let get = matches!(*method, Method::GET | Method::HEAD);
    let post = *method == Method::POST;
    let device_action = path
        .strip_prefix("/devices/")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(id, action)| !id.is_empty() && matches!(*action, "update" | "cancel"));
    match (path, device_action) {
        ("/status", _) if get => json(StatusCode::OK, &s.shared.tracker.snapshot(&s.shared.engine)),
        ("/metrics", _) if get => {
            let body = super::metrics::render(&s.shared.tracker, &s.shared.engine);
            reply(StatusCode::OK, super::metrics::CONTENT_TYPE, body)
        }
        ("/events", _) if get => {
            super::sse::events(s.shared.engine.subscribe(), s.shared.shutdown.clone())
        }
        ("/check", _) if post => check(s, headers),
        (_, Some((id, action))) if post => match known_device(s, headers, id) {
            Ok(id) if action == "update" => update(s, id),
            Ok(id) => cancel(s, id),
            Err((code, why)) => json(code, &why),
        },
        ("/status" | "/metrics" | "/events", _) => not_allowed("GET,HEAD"),
        ("/check", _) | (_, Some(_)) => not_allowed("POST"),
        _ => super::respond::empty(StatusCode::NOT_FOUND),
    }
}

fn not_allowed(allow: &'static str) -> Response {
    let mut answer = super::respond::empty(StatusCode::METHOD_NOT_ALLOWED);
    answer
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    answer
}

/// Before any route: a foreign `Host` gets 421 Misdirected Request (DNS
/// rebinding), and with `allow_remote` a read without the token gets 403.
fn gate(s: &AppState, headers: &HeaderMap) -> Option<Response> {
    if let Some(hosts) = &s.hosts {
        let host = headers.get(header::HOST).map(|h| h.to_str().unwrap_or(""));
        if !hosts.allows(host) {
            let why = "the status endpoint answers only to a loopback Host or its listen address";
            return Some(json(
                StatusCode::MISDIRECTED_REQUEST,
                &json!({ "error": why }),
            ));
        }
    }
    if s.token_for_reads
        && let Err(why) = authorize(s, headers)
    {
        return Some(forbidden(why));
    }
    None
}

/// Actions need the unix socket or the bearer token.
fn authorize(s: &AppState, headers: &HeaderMap) -> Result<(), &'static str> {
    if s.privileged {
        return Ok(());
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (&s.shared.token, given) {
        (Some(token), Some(given))
            if crate::secret_eq::constant_time_eq(token.as_bytes(), given.as_bytes()) =>
        {
            Ok(())
        }
        (None, _) => Err("actions need the unix socket ([status] socket) or a [status] token"),
        _ => Err("missing or wrong bearer token"),
    }
}

fn forbidden(why: &str) -> Response {
    json(StatusCode::FORBIDDEN, &json!({ "error": why }))
}

fn check(s: &AppState, headers: &HeaderMap) -> Response {
    if let Err(why) = authorize(s, headers) {
        return forbidden(why);
    }
    tracing::info!("status endpoint: check requested");
    s.shared.engine.check_now();
    json(
        StatusCode::ACCEPTED,
        &json!({ "result": "check requested" }),
    )
}

/// The `{id}` of a device action (percent-decoded), once the caller is
/// authorized and the device exists, so every device route refuses the same
/// way; else the refusal's status and JSON.
fn known_device(
    s: &AppState,
    headers: &HeaderMap,
    raw: &str,
) -> Result<String, (StatusCode, serde_json::Value)> {
    let refuse = |code, why: String| (code, json!({ "error": why }));
    authorize(s, headers).map_err(|why| refuse(StatusCode::FORBIDDEN, why.to_string()))?;
    let id = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| {
            let why = format!("device id {raw:?} is not UTF-8 once percent-decoded");
            refuse(StatusCode::BAD_REQUEST, why)
        })?;
    if !s.shared.engine.devices().any(|d| d.id == *id) {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("unknown device {id:?}"),
        ));
    }
    Ok(id.into_owned())
}

/// `{"result": …, "device": …}` with `code`: the answer of every device action.
fn device_answer(code: StatusCode, result: &str, id: &str) -> Response {
    json(code, &json!({ "result": result, "device": id }))
}

fn update(s: &AppState, id: String) -> Response {
    let engine = s.shared.engine.clone();
    if engine.is_busy(&id) {
        // One device, one update: nothing of a busy device runs beside its update.
        return device_answer(StatusCode::CONFLICT, "busy", &id);
    }
    tracing::info!(device = %id, "status endpoint: update requested");
    let device = id.clone();
    tokio::spawn(async move {
        if let Err(e) = engine.cycle(&device).await {
            tracing::warn!(device = %device, "{e}");
        }
    });
    device_answer(StatusCode::ACCEPTED, "update cycle started", &id)
}

fn cancel(s: &AppState, id: String) -> Response {
    let (code, result) = match s.shared.engine.cancel(&id) {
        CancelOutcome::Canceled => (StatusCode::OK, "canceled"),
        CancelOutcome::NotRunning => (StatusCode::CONFLICT, "not_running"),
        CancelOutcome::TooLate => (StatusCode::CONFLICT, "too_late"),
    };
    tracing::info!(device = %id, "status endpoint: cancel: {result}");
    device_answer(code, result, &id)
}
