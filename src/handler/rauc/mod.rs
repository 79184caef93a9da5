//! `handler = "rauc"`: the gateway's own OS, A/B through the RAUC service over
//! D-Bus. Background transfer installs the bundle into the inactive slot (RAUC
//! verifies its signature) and keeps the running slot primary, so a power cut
//! before the update step boots the old system; the update step makes the new
//! slot primary and reboots. After the reboot, start-up recovery asks
//! [`UpdateHandler::resolve_after_restart`]: the booted slot runs the target and
//! is healthy → `Mark("good", "booted")`; otherwise it is marked bad and the
//! gateway reboots back into the old slot.

pub mod config;
mod dbus;
mod health;
mod reboot;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use self::config::RaucConfig;
use self::dbus::Rauc;
use super::command::CommandHandler;
use super::{BackgroundTransfer, HandlerError, UpdateHandler, VerifiedImage};
use crate::config::CommandConfig;
use crate::progress::{Progress, ProgressStep};

/// How long start-up recovery waits for the RAUC service after a reboot (it may
/// start after the agent, or be D-Bus activated slowly).
const SERVICE_WAIT: Duration = Duration::from_secs(120);

/// Limit of the commands that only ask something (`executable_command`,
/// `reboot_command`).
const SHORT_LIMIT: Duration = Duration::from_secs(60);

pub struct RaucHandler {
    device_id: String,
    device_type: String,
    config: RaucConfig,
    /// Runs the configured commands under the command handler's process-group
    /// supervision, each killed with its group at its limit.
    commands: CommandHandler,
    /// Set when recovery marked the booted slot bad: the reboot back into the
    /// old slot waits until the failure is recorded (`after_resolved`).
    reboot_back: AtomicBool,
}

impl RaucHandler {
    pub fn new(device_id: &str, device_type: &str, config: RaucConfig) -> Self {
        let commands = CommandHandler::new(
            device_id,
            device_type,
            CommandConfig {
                version_command: None,
                executable_command: config.executable_command.clone(),
                transfer_command: None,
                update_command: vec![],
                command_timeout: SHORT_LIMIT,
            },
        );
        RaucHandler {
            device_id: device_id.to_string(),
            device_type: device_type.to_string(),
            config,
            commands,
            reboot_back: AtomicBool::new(false),
        }
    }

    /// The factory image's version: `VERSION_ID` of the os-release file.
    fn os_release_version(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.config.os_release).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("VERSION_ID="))
            .map(|v| v.trim().trim_matches('"').to_string())
            .filter(|v| !v.is_empty())
    }

    /// Marks the booted slot bad and the other one active; the reboot follows
    /// in `after_resolved`.
    async fn roll_back(&self, rauc: &Rauc, reason: String) -> Result<(), HandlerError> {
        let marked = async {
            rauc.mark("bad", "booted").await?;
            rauc.mark("active", "other").await
        }
        .await;
        match marked {
            Ok(m) => {
                tracing::warn!(device = %self.device_id, "{reason}; {m}, rebooting back");
                self.reboot_back.store(true, Ordering::SeqCst);
                Err(HandlerError::failed(
                    "rauc",
                    format!("{reason}; booted slot marked bad, rebooting into the previous slot"),
                ))
            }
            Err(e) => Err(HandlerError::failed(
                "rauc",
                format!("{reason}; and cannot roll back: {e}"),
            )),
        }
    }
}

#[async_trait]
impl UpdateHandler for RaucHandler {
    /// The booted slot's bundle version, or the factory image's `VERSION_ID`.
    async fn current_version(&self) -> Result<Option<String>, HandlerError> {
        let booted = Rauc::connect().await?.booted().await?;
        Ok(booted.bundle_version.or_else(|| self.os_release_version()))
    }

    /// Whether the reboot may happen now (`executable_command`: 0 = now,
    /// 1 = not now, anything else an error).
    async fn is_update_executable(&self) -> Result<bool, HandlerError> {
        self.commands.is_update_executable().await
    }

    /// The update step: the new slot becomes primary and the gateway reboots;
    /// the agent goes down with it. Returns only on failure.
    async fn update(&self, image: &VerifiedImage, progress: &Progress) -> Result<(), HandlerError> {
        if let Err(e) = progress.advance_to(ProgressStep::Updating) {
            tracing::warn!(device = %self.device_id, "cannot report the update step: {e}");
        }
        let rauc = Rauc::connect().await?;
        let target = &image.firmware().version;
        let other = rauc.slots().await?.into_iter().find(|s| s.state != "booted");
        let holds = other.as_ref().and_then(|s| s.bundle_version.as_deref());
        if holds != Some(target.as_str()) {
            return Err(HandlerError::failed(
                "rauc",
                format!(
                    "the inactive slot holds {}, not {target}; it must be transferred again",
                    holds.unwrap_or("no bundle")
                ),
            ));
        }
        rauc.mark("active", "other").await?;
        if let Err(e) = progress.advance_to(ProgressStep::Rebooting) {
            tracing::warn!(device = %self.device_id, "cannot report the reboot: {e}");
        }
        tracing::info!(device = %self.device_id, firmware_version = %target, "rebooting into the new slot");
        let asked = reboot::request(&self.config, &self.commands, &rauc).await;
        if asked.is_ok() {
            tokio::time::sleep(self.config.reboot_timeout).await;
        }
        // Still running: the next boot stays on this slot.
        rauc.mark("active", "booted").await?;
        asked?;
        Err(HandlerError::failed(
            "reboot",
            format!(
                "the system did not go down within {}; the running slot stays primary",
                humantime::format_duration(self.config.reboot_timeout)
            ),
        ))
    }

    fn background_transfer(&self) -> Option<&dyn BackgroundTransfer> {
        Some(self)
    }

    fn reboots(&self) -> bool {
        true
    }

    async fn resolve_after_restart(&self, version: &str) -> Option<Result<(), HandlerError>> {
        let (rauc, booted) = match Rauc::booted_when_up(SERVICE_WAIT).await {
            Ok(found) => found,
            Err(e) => return Some(Err(e)),
        };
        Some(match health::check(&self.config, &self.commands, &booted, version).await {
            Ok(()) => rauc.mark("good", "booted").await.map(|m| {
                tracing::info!(device = %self.device_id, firmware_version = %version, "{m}");
            }),
            // The old slot is running: nothing to mark, the failure is all.
            Err(reason) if booted.bundle_version.as_deref() != Some(version) => {
                Err(HandlerError::failed("rauc", reason))
            }
            Err(reason) => self.roll_back(&rauc, reason).await,
        })
    }

    async fn after_resolved(&self) {
        if !self.reboot_back.swap(false, Ordering::SeqCst) {
            return;
        }
        let rebooted = match Rauc::connect().await {
            Ok(rauc) => reboot::request(&self.config, &self.commands, &rauc).await,
            Err(e) => Err(e),
        };
        if let Err(e) = rebooted {
            tracing::error!(device = %self.device_id, "cannot reboot back into the previous slot: {e}");
        }
    }
}

#[async_trait]
impl BackgroundTransfer for RaucHandler {
    /// Installs the bundle into the inactive slot; the running slot stays primary
    /// until the update step.
    async fn transfer(
        &self,
        image: &VerifiedImage,
        progress: &Progress,
    ) -> Result<(), HandlerError> {
        let rauc = Rauc::connect().await?;
        let compatible = rauc.compatible().await?;
        if compatible != self.device_type {
            return Err(HandlerError::failed(
                "rauc",
                format!(
                    "RAUC's compatible {compatible:?} is not this device's type {:?}",
                    self.device_type
                ),
            ));
        }
        let path = image.path().to_str().ok_or_else(|| {
            HandlerError::failed("rauc", format!("bundle path {:?} is not UTF-8", image.path()))
        })?;
        rauc.install(path, |p| super::report_sent(progress, p.into(), 100))
            .await?;
        rauc.mark("active", "booted").await?;
        Ok(())
    }
}
