//! `fota-agent fetch`: the download engine on its own (same resume, retry and
//! verification code the agent uses), for pre-staging firmware and benchmarks.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fota_agent::checksum::{Checksum, ChecksumAlgorithm};
use fota_agent::download::{DownloadConfig, DownloadRequest, Downloader};

use super::bar::{self, Bar};

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

pub async fn fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let mut checksums = Vec::new();
    for (alg, hex) in [
        (ChecksumAlgorithm::Md5, &args.md5),
        (ChecksumAlgorithm::Sha256, &args.sha256),
        (ChecksumAlgorithm::Sha512, &args.sha512),
    ] {
        if let Some(hex) = hex {
            checksums.push(Checksum::new(alg, hex).with_context(|| format!("--{alg}"))?);
        }
    }
    let config = DownloadConfig {
        ca_bundle: args.ca_bundle,
        client_cert: args.client_cert,
        client_key: args.client_key,
        https_only: args.https_only,
        stall_timeout: Duration::from_secs(args.stall_timeout.max(1)),
        max_attempts: args.attempts.max(1),
        max_image_size: args.max_size,
        ..DownloadConfig::default()
    };
    let downloader = Downloader::new(config)?;
    let request = DownloadRequest {
        url: &args.url,
        dest: &args.output,
        size: args.size,
        checksums: &checksums,
        also_hash: &[ChecksumAlgorithm::Sha256],
        headers: &[],
    };
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| std::sync::Mutex::new(Bar::new()));
    let report = |done: u64, total: Option<u64>| {
        if let Some(bar) = &bar {
            let mut bar = bar.lock().unwrap_or_else(|p| p.into_inner());
            let rate = bar.rate(done);
            bar.show(|| match total {
                Some(t) => format!(
                    "{} {}/{} {}/s",
                    bar::gauge(done, t),
                    bar::bytes(done),
                    bar::bytes(t),
                    bar::bytes(rate)
                ),
                None => format!("{} {}/s", bar::bytes(done), bar::bytes(rate)),
            });
        }
    };
    let digests = downloader.fetch(&request, &report).await?;
    if let Some(bar) = &bar {
        bar.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
    println!(
        "{}: {} bytes, sha256 {}",
        args.output.display(),
        digests.length,
        digests.get(ChecksumAlgorithm::Sha256).unwrap_or("-")
    );
    Ok(ExitCode::SUCCESS)
}
