//! The binary's commands; the edge where library errors become `anyhow` and exit
//! codes.

pub mod args;
mod bar;
mod check;
mod fetch;
mod install;
mod lock;
mod malloc;
mod render;
mod run;
mod status;
mod stop_signal;

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use fota_agent::config::Config;
use fota_agent::engine::Engine;
use fota_agent::state_lock::{self, StateLock};

pub use check::check;
pub use fetch::fetch;
pub use install::{InstallArgs, install};
pub use lock::{lock, unlock};
pub use malloc::tune as tune_malloc;
pub use run::run;
pub use status::status;

/// Logs to journald under systemd, to stderr otherwise (see
/// `fota_agent::logging`); `RUST_LOG` overrides the default `info` level.
pub fn init_logging() {
    fota_agent::logging::init();
}

/// One worker thread, as small as a current-thread runtime, but a multi-thread
/// one: durable writes (`persist`, fsync on slow flash) run in `block_in_place`,
/// which hands the worker's other tasks (serial timeouts, the status endpoint,
/// the watchdog) to another thread meanwhile instead of stalling them.
/// `TOKIO_WORKER_THREADS=N` runs N workers instead (a gateway with many devices
/// updating at once).
pub fn block_on<F: Future<Output = anyhow::Result<ExitCode>>>(f: F) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads()?)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

/// Environment variable that sets the runtime's worker threads (tokio's own
/// name for it; it is parsed here so a bad value is an error, not a panic).
const WORKER_THREADS_ENV: &str = "TOKIO_WORKER_THREADS";

fn worker_threads() -> anyhow::Result<usize> {
    let Some(value) = std::env::var_os(WORKER_THREADS_ENV) else {
        return Ok(1);
    };
    value
        .to_str()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .with_context(|| {
            format!("{WORKER_THREADS_ENV}={value:?}: expected a number of threads from 1 to 64")
        })
}

fn load(config: &Path) -> anyhow::Result<Config> {
    // The error already names file, line and key; main maps it to EX_CONFIG.
    Config::load(config).map_err(anyhow::Error::new)
}

/// The state directory's lock, held by every command that can touch a device or
/// the state, before anything else is touched (see `fota_agent::state_lock`).
fn lock_state(config: &Config) -> anyhow::Result<StateLock> {
    StateLock::acquire(&config.agent.state_dir, &state_lock::command_line())
        .map_err(anyhow::Error::new)
}

fn engine(config: &Config) -> anyhow::Result<Engine> {
    Engine::from_config(config).with_context(|| format!("{}", config.path.display()))
}

pub fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    if let Some(warning) = config.exposed_secrets_warning() {
        eprintln!("warning: {warning}");
    }
    println!(
        "{}: ok ({} device{})",
        path.display(),
        config.devices.len(),
        if config.devices.len() == 1 { "" } else { "s" }
    );
    // The config is valid; what the source will find is only a warning here.
    if let Some(problem) = fota_agent::source::problem(&config) {
        eprintln!("warning: source: {problem}");
    }
    Ok(ExitCode::SUCCESS)
}
