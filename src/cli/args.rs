//! The command line's definition, and nothing else: `fota-agent-generate`
//! (src/bin/) includes this file too, to write the man pages and shell
//! completions from it, so the agent itself links neither clap_mangen nor
//! clap_complete. Only clap and std here.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fota-agent",
    version,
    about = "Firmware update agent for Linux gateways"
)]
pub struct Args {
    /// Configuration file [default: $FOTA_AGENT_CONFIG, or /etc/fota-agent/config.toml
    /// when that is unset or empty].
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Verify an image (a local file or an http(s) URL) and install it on a device now.
    Install {
        /// The configured device id.
        #[arg(long)]
        device: String,
        /// The image file, or an http(s) URL: then it is downloaded into the
        /// state directory like a server's offer (resumable, checked on the way).
        image: String,
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
    Fetch(FetchArgs),
}

#[derive(clap::Args)]
pub struct FetchArgs {
    /// The http(s) URL.
    pub url: String,
    /// Where to write the verified file (`FILE.part` holds a partial download).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Expected MD5 (hex).
    #[arg(long)]
    pub md5: Option<String>,
    /// Expected SHA-256 (hex).
    #[arg(long)]
    pub sha256: Option<String>,
    /// Expected SHA-512 (hex).
    #[arg(long)]
    pub sha512: Option<String>,
    /// Expected size in bytes.
    #[arg(long)]
    pub size: Option<u64>,
    /// PEM bundle of the CAs to trust instead of the system roots.
    #[arg(long)]
    pub ca_bundle: Option<PathBuf>,
    /// PEM client certificate (and key, unless --client-key) for mTLS.
    #[arg(long)]
    pub client_cert: Option<PathBuf>,
    #[arg(long)]
    pub client_key: Option<PathBuf>,
    /// Refuse http:// and redirects to it.
    #[arg(long)]
    pub https_only: bool,
    /// Attempts before giving up.
    #[arg(long, default_value_t = 5)]
    pub attempts: u32,
    /// Seconds without data before an attempt is abandoned (and resumed).
    #[arg(long, default_value_t = 60)]
    pub stall_timeout: u64,
    /// Refuse images larger than this many bytes.
    #[arg(long)]
    pub max_size: Option<u64>,
}
