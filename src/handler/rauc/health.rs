//! The check after the reboot into a new slot: the booted slot runs the target
//! version, the system has been up `min_uptime`, and `health_command` exits 0.
//! Only then is the slot marked good; a system that cannot pass stays unconfirmed.

use std::path::Path;
use std::time::Duration;

use super::config::RaucConfig;
use super::dbus::Slot;
use crate::handler::command::{CommandHandler, Step};

/// Why the booted system is not the healthy target, or `Ok`. `health_command`
/// runs under `commands`' supervision: at `health_timeout` its whole process
/// group is killed, so nothing it started outlives the verdict.
pub(super) async fn check(
    config: &RaucConfig,
    commands: &CommandHandler,
    booted: &Slot,
    target: &str,
) -> Result<(), String> {
    let running = booted.bundle_version.as_deref().unwrap_or("no bundle version");
    if running != target {
        return Err(format!(
            "the booted slot {} runs {running}, not {target} (the new slot did not boot)",
            booted.name
        ));
    }
    wait_uptime(config.min_uptime).await?;
    if let Some(argv) = &config.health_command {
        commands
            .run_checked(Step::Health, argv, config.health_timeout)
            .await
            .map_err(|e| format!("health check failed: {e}"))?;
    }
    Ok(())
}

/// Waits until the system has been up `min`.
async fn wait_uptime(min: Duration) -> Result<(), String> {
    if min.is_zero() {
        return Ok(());
    }
    let up = uptime(Path::new("/proc/uptime"))?;
    if let Some(rest) = min.checked_sub(up) {
        tokio::time::sleep(rest).await;
    }
    Ok(())
}

/// The first field of `/proc/uptime`: seconds since boot.
fn uptime(path: &Path) -> Result<Duration, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_uptime(&text).ok_or_else(|| format!("{}: unexpected content {text:?}", path.display()))
}

fn parse_uptime(text: &str) -> Option<Duration> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_uptime() {
        assert_eq!(parse_uptime("12.50 40.00\n"), Some(Duration::from_millis(12_500)));
        assert_eq!(parse_uptime("garbage"), None);
        assert_eq!(parse_uptime("-1 2"), None);
        assert_eq!(parse_uptime(""), None);
    }
}
