//! `fota-agent fetch`: the download engine on its own (same resume, retry and
//! verification code the agent uses), for pre-staging firmware and benchmarks.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fota_agent::checksum::{Checksum, ChecksumAlgorithm};
use fota_agent::download::{DownloadConfig, DownloadRequest, Downloader};

use super::args::FetchArgs;
use super::bar::{self, Bar};

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
    // Set up (arguments, TLS roots): what runs from here on is the download.
    fota_agent::resident::release_file_pages();
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
