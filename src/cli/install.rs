//! `fota-agent install`: verify an image (a local file, or downloaded from a URL)
//! and run the device's handler on it now.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use fota_agent::checksum::{Checksum, ChecksumAlgorithm};
use fota_agent::model::FirmwareLocation;
use fota_agent::progress::Outcome;
use fota_agent::state_lock::LockError;

pub struct InstallArgs {
    pub device: String,
    /// A file path, or an http(s) URL.
    pub image: String,
    pub version: Option<String>,
    pub sha256: Option<String>,
    pub md5: Option<String>,
}

pub async fn install(config: &Path, args: InstallArgs) -> anyhow::Result<ExitCode> {
    let config = super::load(config)?;
    let _lock = super::lock_state(&config).map_err(|e| suggest_running_agent(e, &args.device))?;
    let engine = super::engine(&config)?;
    let mut checksums = Vec::new();
    for (alg, hex) in [
        (ChecksumAlgorithm::Sha256, &args.sha256),
        (ChecksumAlgorithm::Md5, &args.md5),
    ] {
        if let Some(hex) = hex {
            checksums.push(Checksum::new(alg, hex).context("--sha256/--md5")?);
        }
    }
    if args.version.is_none() {
        eprintln!(
            "note: no --version given: the version rules (only-newer, prerequisites) cannot be applied and the result is not confirmed by the device's version"
        );
    }
    // Set up: what runs from here on is the copy, the hashing and the handler.
    fota_agent::resident::release_file_pages();
    let shown = tokio::spawn(super::render::show_progress(engine.subscribe()));
    let work = engine.install(
        &args.device,
        location(&args.image),
        args.version.as_deref(),
        checksums,
    );
    let mut failed = None;
    let code = super::stop_signal::until_stopped(async {
        match work.await {
            Ok(outcome) => {
                println!("{}: {outcome}", args.device);
                match outcome {
                    Outcome::Success => ExitCode::SUCCESS,
                    _ => ExitCode::FAILURE,
                }
            }
            Err(e) => {
                failed = Some(e);
                ExitCode::FAILURE
            }
        }
    })
    .await?;
    drop(engine);
    if let Some(e) = failed {
        return Err(e.into());
    }
    let _ = shown.await;
    Ok(code)
}

/// A running agent holds the state: say how to have it install, or stop it.
fn suggest_running_agent(e: anyhow::Error, device: &str) -> anyhow::Error {
    match e.downcast_ref::<LockError>() {
        Some(LockError::Held { .. }) => anyhow::anyhow!(
            "{e}\n  to update {device} now, ask the running agent: \
             POST /devices/{device}/update on its status endpoint \
             (see `fota-agent status`), or stop it first (systemctl stop fota-agent)"
        ),
        _ => e,
    }
}

/// An `http://` or `https://` argument is downloaded; anything else is a file.
fn location(image: &str) -> FirmwareLocation {
    let scheme = image.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http" | "https") => FirmwareLocation::Url(image.to_string()),
        _ => FirmwareLocation::File(PathBuf::from(image)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_are_urls_and_anything_else_a_file() {
        for url in ["http://h/fw.bin", "HTTPS://h/fw.bin"] {
            assert!(matches!(location(url), FirmwareLocation::Url(u) if u == url));
        }
        for file in ["fw.bin", "/var/fw.bin", "ftp://h/fw.bin", "./http://x"] {
            assert!(
                matches!(location(file), FirmwareLocation::File(p) if p == Path::new(file)),
                "{file}"
            );
        }
    }
}
