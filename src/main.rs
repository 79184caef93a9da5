//! The `fota-agent` binary: parses the command line and calls the library.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fota-agent",
    version,
    about = "Firmware update agent for Linux gateways"
)]
struct Args {
    /// Configuration file [default: $FOTA_AGENT_CONFIG, or /etc/fota-agent/config.toml
    /// when that is unset or empty].
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: poll the source and apply updates.
    Run {
        /// One poll-and-apply cycle, then exit (non-zero if an update failed).
        #[arg(long)]
        once: bool,
    },
    /// Print each device's firmware status and the firmware it would get.
    Check,
    /// Ask the running agent's status endpoint what it is doing.
    Status {
        /// Print the endpoint's JSON as received.
        #[arg(long)]
        json: bool,
    },
    /// Verify a local image and install it on a device now.
    Install {
        /// The configured device id.
        #[arg(long)]
        device: String,
        /// The image file.
        image: PathBuf,
        /// The image's version; without it the version rules cannot be applied.
        #[arg(long)]
        version: Option<String>,
        /// Expected SHA-256 of the image (hex).
        #[arg(long)]
        sha256: Option<String>,
        /// Expected MD5 of the image (hex).
        #[arg(long)]
        md5: Option<String>,
    },
    /// Lock a device to one version (older or newer): it gets that version and no
    /// other update until `unlock`.
    Lock {
        /// The configured device id.
        device: String,
        /// The version to install and keep.
        version: String,
        /// Install when the device next comes online (or the agent restarts),
        /// not at the next cycle.
        #[arg(long)]
        on_reset: bool,
    },
    /// Remove a device's lock (`fota-agent lock`): it follows the releases again.
    Unlock {
        /// The configured device id.
        device: String,
    },
    /// Validate the configuration file and exit.
    CheckConfig,
    /// Download and verify one file with the agent's download engine.
    Fetch(cli::FetchArgs),
    /// Write the man page or shell completions (used by the Debian package).
    #[command(subcommand, hide = true)]
    Generate(cli::Generate),
}

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
        Command::Generate(what) => cli::generate::<Args>(what),
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
