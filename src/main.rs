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
    /// Configuration file.
    #[arg(long, global = true, env = "FOTA_AGENT_CONFIG", default_value = fota_agent::config::DEFAULT_PATH)]
    config: PathBuf,
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
    /// Validate the configuration file and exit.
    CheckConfig,
    /// Download and verify one file with the agent's download engine.
    Fetch(cli::FetchArgs),
    /// Write the man page or shell completions (used by the Debian package).
    #[command(subcommand, hide = true)]
    Generate(cli::Generate),
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_logging();
    let result = match args.command {
        Command::CheckConfig => cli::check_config(&args.config),
        Command::Fetch(fetch) => cli::block_on(cli::fetch(fetch)),
        Command::Generate(what) => cli::generate::<Args>(what),
        Command::Check => cli::block_on(cli::check(&args.config)),
        Command::Status { json } => cli::status(&args.config, json),
        Command::Run { once } => cli::block_on(cli::run(&args.config, once)),
        Command::Install {
            device,
            image,
            version,
            sha256,
            md5,
        } => cli::block_on(cli::install(
            &args.config,
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
        Err(e) => {
            eprintln!("fota-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
