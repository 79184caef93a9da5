//! The `fota-agent` binary: parses the command line and calls the library.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cli::args::{Args, Command};

/// `--config`, else a non-empty `FOTA_AGENT_CONFIG`, else the default path. (clap's
/// own `env` refuses an empty variable even when `--config` is given.)
fn config_path(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| {
        std::env::var_os("FOTA_AGENT_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .unwrap_or_else(|| PathBuf::from(fota_agent::config::DEFAULT_PATH))
}

fn main() -> ExitCode {
    cli::tune_malloc();
    let args = Args::parse();
    cli::init_logging();
    let config = config_path(args.config);
    let result = match args.command {
        Command::CheckConfig => cli::check_config(&config),
        Command::Fetch(fetch) => cli::block_on(cli::fetch(fetch)),
        Command::Check => cli::block_on(cli::check(&config)),
        Command::Status { json } => cli::status(&config, json),
        Command::Lock {
            device,
            version,
            on_reset,
        } => cli::lock(&config, &device, &version, on_reset),
        Command::Unlock { device } => cli::unlock(&config, &device),
        Command::Run { once } => cli::block_on(cli::run(&config, once)),
        Command::Install {
            device,
            image,
            version,
            sha256,
            md5,
        } => cli::block_on(cli::install(
            &config,
            cli::InstallArgs {
                device,
                image,
                version,
                sha256,
                md5,
            },
        )),
    };
    match result {
        Ok(code) => code,
        // A bad config is EX_CONFIG (78): the unit's RestartPreventExitStatus keeps
        // systemd from restarting into the same error forever.
        Err(e)
            if e.downcast_ref::<fota_agent::config::ConfigError>()
                .is_some() =>
        {
            eprintln!("fota-agent: {e}");
            ExitCode::from(78)
        }
        // A state directory that cannot be one (a regular file on its path) is a
        // config mistake too.
        Err(e)
            if e.downcast_ref::<fota_agent::state_lock::LockError>()
                .is_some_and(|l| l.is_bad_path()) =>
        {
            eprintln!("fota-agent: state_dir: {e}");
            ExitCode::from(78)
        }
        Err(e) => {
            eprintln!("fota-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
