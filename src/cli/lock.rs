//! `fota-agent lock DEVICE VERSION [--on-reset]` and `fota-agent unlock DEVICE`:
//! the operator's lock, written to the state directory for the running agent to
//! read at its next cycle. They do not take the state directory's lock: the
//! running agent holds that, and only ever reads lock files.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use fota_agent::config::{Config, DeviceConfig};
use fota_agent::engine::lock;
use fota_agent::store::{Lock, Store, now_secs};

fn device<'c>(config: &'c Config, id: &str) -> anyhow::Result<&'c DeviceConfig> {
    match config.devices.iter().find(|d| d.id == id) {
        Some(d) => Ok(d),
        None => {
            let known: Vec<&str> = config.devices.iter().map(|d| d.id.as_str()).collect();
            bail!("unknown device {id:?} (configured: {})", known.join(", "))
        }
    }
}

/// The config's own lock wins over nothing: it is changed in the config file.
fn refuse_config_lock(config: &Config, device: &DeviceConfig) -> anyhow::Result<()> {
    if let Some(version) = &device.lock {
        bail!(
            "device {:?} is locked to {version} in {} (lock = {version:?}); change it there",
            device.id,
            config.path.display()
        );
    }
    Ok(())
}

pub fn lock(config: &Path, id: &str, version: &str, on_reset: bool) -> anyhow::Result<ExitCode> {
    let config = super::load(config)?;
    let device = device(&config, id)?;
    refuse_config_lock(&config, device)?;
    if let Some(problem) = lock::version_problem(device.version_scheme, version) {
        bail!("device {id:?}: cannot lock to {version:?}: {problem}");
    }
    let lock = Lock {
        version: version.to_string(),
        on_reset,
        set_at: now_secs(),
    };
    Store::at(&config.agent.state_dir)
        .set_lock(id, &lock)
        .with_context(|| format!("cannot lock device {id:?}"))?;
    let when = if on_reset {
        "on reset: installed when the device next comes online or the agent restarts"
    } else {
        "now: installed at the agent's next cycle"
    };
    println!("{id}: locked to {version}, flash {when}");
    Ok(ExitCode::SUCCESS)
}

pub fn unlock(config: &Path, id: &str) -> anyhow::Result<ExitCode> {
    let config = super::load(config)?;
    let device = device(&config, id)?;
    let removed = Store::at(&config.agent.state_dir)
        .remove_lock(id)
        .with_context(|| format!("cannot unlock device {id:?}"))?;
    if !removed {
        refuse_config_lock(&config, device)?;
        bail!("device {id:?} is not locked");
    }
    match &device.lock {
        Some(v) => println!("{id}: unlocked; the config's lock = {v:?} applies again"),
        None => println!("{id}: unlocked"),
    }
    Ok(ExitCode::SUCCESS)
}
