//! The binary's commands; the edge where library errors become `anyhow` and exit
//! codes.

mod check;
mod fetch;
mod generate;
mod install;
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
pub use fetch::{FetchArgs, fetch};
pub use generate::{Generate, generate};
pub use install::{InstallArgs, install};
pub use run::run;
pub use status::status;

/// Logs to journald under systemd, to stderr otherwise (see
/// `fota_agent::logging`); `RUST_LOG` overrides the default `info` level.
pub fn init_logging() {
    fota_agent::logging::init();
}

pub fn block_on<F: Future<Output = anyhow::Result<ExitCode>>>(f: F) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
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
    Ok(ExitCode::SUCCESS)
}
