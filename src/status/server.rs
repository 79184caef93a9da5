//! The HTTP server of the status endpoint (axum): loopback TCP and optionally a
//! unix socket, both serving the same routes.
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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, Path as UrlPath, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Tracker;
use crate::config::StatusConfig;
use crate::engine::Engine;
use crate::progress::{Outcome, ProgressEvent, ProgressKind};
use crate::source::CancelOutcome;

struct Shared {
    engine: Engine,
    tracker: Arc<Tracker>,
    token: Option<String>,
    shutdown: CancellationToken,
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
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
    if let Some(addr) = config.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| EndpointError::Tcp { addr, source })?;
        endpoint_tcp = listener.local_addr().ok();
        let app = router(AppState {
            shared: shared.clone(),
            privileged: false,
            hosts: Some(super::host::HostGuard::new(
                config.listen,
                config.allow_remote,
            )),
            token_for_reads: config.allow_remote,
        });
        serve(&mut tasks, listener, app, shutdown.clone());
    }
    if let Some(path) = &config.socket {
        let listener = bind_unix(path).map_err(|source| EndpointError::Unix {
            path: path.clone(),
            source,
        })?;
        let app = router(AppState {
            shared: shared.clone(),
            privileged: true,
            hosts: None,
            token_for_reads: false,
        });
        serve(&mut tasks, listener, app, shutdown.clone());
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

/// Serves `app` on `listener` in `tasks` until `stop`.
fn serve<L>(tasks: &mut JoinSet<()>, listener: L, app: Router, stop: CancellationToken)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!("status endpoint: {e}");
        }
    });
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/events", get(events))
        .route("/check", post(check))
        .route("/devices/{id}/update", post(update))
        .route("/devices/{id}/cancel", post(cancel))
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state)
}

/// Before any route: a foreign `Host` gets 421 Misdirected Request (DNS
/// rebinding), and with `allow_remote` a read without the token gets 403.
async fn gate(
    State(s): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    if let Some(hosts) = &s.hosts {
        let host = headers.get(header::HOST).map(|h| h.to_str().unwrap_or(""));
        if !hosts.allows(host) {
            let why = "the status endpoint answers only to a loopback Host or its listen address";
            return (
                StatusCode::MISDIRECTED_REQUEST,
                Json(json!({ "error": why })),
            )
                .into_response();
        }
    }
    if s.token_for_reads
        && let Err(why) = authorize(&s, headers)
    {
        return forbidden(why);
    }
    next.run(request).await
}

async fn status(State(s): State<AppState>) -> Json<super::Snapshot> {
    Json(s.shared.tracker.snapshot(&s.shared.engine))
}

async fn metrics(State(s): State<AppState>) -> Response {
    let body = super::metrics::render(&s.shared.tracker, &s.shared.engine);
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], body).into_response()
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

async fn events(State(s): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.shared.engine.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let event = Event::default()
                        .event(event_name(&ev.kind))
                        .data(event_json(&ev).to_string());
                    return Some((Ok(event), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    // An open event stream must not hold up the shutdown.
    .take_until(s.shared.shutdown.clone().cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
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
    (StatusCode::FORBIDDEN, Json(json!({ "error": why }))).into_response()
}

fn unknown_device(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("unknown device {id:?}") })),
    )
        .into_response()
}

async fn check(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(why) = authorize(&s, &headers) {
        return forbidden(why);
    }
    tracing::info!("status endpoint: check requested");
    s.shared.engine.check_now();
    (
        StatusCode::ACCEPTED,
        Json(json!({ "result": "check requested" })),
    )
        .into_response()
}

/// The `{id}` of a device action, extracted only once the caller is authorized
/// and the device exists, so every device route refuses the same way.
struct KnownDevice(String);

impl FromRequestParts<AppState> for KnownDevice {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Response> {
        authorize(s, &parts.headers).map_err(forbidden)?;
        let UrlPath(id) = UrlPath::<String>::from_request_parts(parts, s)
            .await
            .map_err(IntoResponse::into_response)?;
        if !s.shared.engine.devices().any(|d| d.id == id) {
            return Err(unknown_device(&id));
        }
        Ok(KnownDevice(id))
    }
}

/// `{"result": …, "device": …}` with `code`: the answer of every device action.
fn device_answer(code: StatusCode, result: &str, id: &str) -> Response {
    (code, Json(json!({ "result": result, "device": id }))).into_response()
}

async fn update(State(s): State<AppState>, KnownDevice(id): KnownDevice) -> Response {
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

async fn cancel(State(s): State<AppState>, KnownDevice(id): KnownDevice) -> Response {
    let (code, result) = match s.shared.engine.cancel(&id) {
        CancelOutcome::Canceled => (StatusCode::OK, "canceled"),
        CancelOutcome::NotRunning => (StatusCode::CONFLICT, "not_running"),
        CancelOutcome::TooLate => (StatusCode::CONFLICT, "too_late"),
    };
    tracing::info!(device = %id, "status endpoint: cancel: {result}");
    device_answer(code, result, &id)
}
