//! One device's update over Wi-Fi, as IoT_Demo runs it: `sys_upgrade` with the
//! version, the device downloads its other-slot bin from the ROM port
//! (TRANSFERRING, percent from bytes served), reports `device_upgrade_success`
//! or `device_upgrade_failed`, `sys_reboot` (UPDATING), and the device comes
//! back identified on the new firmware. Every other ending is a failure that
//! says why and leaves the device on its old slot.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::frames;
use super::link::{Link, LinkEvent, Offer};
use crate::handler::{HandlerError, image_sent, report_sent};
use crate::progress::Progress;

/// Runs the update of `link`'s device to `offer`. Waits (the engine's update
/// timeout bounds it) until the device is connected.
pub async fn run(
    link: &Arc<Link>,
    offer: Arc<Offer>,
    progress: &Progress,
    stall: Duration,
) -> Result<(), HandlerError> {
    let mut events = link.subscribe();
    let generation = ready(link, &mut events).await?;
    let _offered = link.offer_until_done(offer.clone());
    if !link.send(
        generation,
        frames::sys_upgrade(&offer.version, frames::nonce()),
    ) {
        return Err(disconnected(link, "before the upgrade request"));
    }
    tracing::info!(device = %link.id, version = %offer.version, "esp8266-wifi upgrade requested");
    download(link, &offer, &mut events, generation, progress, stall).await?;
    image_sent(progress);
    if !link.send(generation, frames::sys_reboot(frames::nonce())) {
        return Err(disconnected(link, "before the reboot request"));
    }
    // The device reboots into the new slot after 1 s and identifies itself on
    // a new connection.
    loop {
        match next(&mut events).await? {
            LinkEvent::Ready(g) if g != generation => break,
            _ => {}
        }
    }
    link.set_version(&offer.version);
    Ok(())
}

/// The generation of the device's identified connection, once there is one.
async fn ready(link: &Link, events: &mut Receiver<LinkEvent>) -> Result<u64, HandlerError> {
    loop {
        if let Some(generation) = link.ready_generation() {
            return Ok(generation);
        }
        tracing::debug!(device = %link.id, "esp8266-wifi update waits for the device to connect");
        next(events).await?;
    }
}

/// Until the device's verdict: download progress, or the reason it failed.
async fn download(
    link: &Link,
    offer: &Offer,
    events: &mut Receiver<LinkEvent>,
    generation: u64,
    progress: &Progress,
    stall: Duration,
) -> Result<(), HandlerError> {
    let mut deadline = Instant::now() + stall;
    let mut served = None;
    loop {
        let event = match tokio::time::timeout_at(deadline, next(events)).await {
            Ok(event) => event?,
            Err(_) => return Err(stalled(offer, served, stall)),
        };
        match event {
            LinkEvent::Served { slot, done, total } => {
                deadline = Instant::now() + stall;
                served = Some((slot, done, total));
                report_sent(progress, done, total);
            }
            LinkEvent::Upgrade {
                success: true,
                rom_version,
                ..
            } if rom_version == offer.version => return Ok(()),
            LinkEvent::Upgrade {
                success: true,
                rom_version,
                ..
            } => {
                return Err(HandlerError::failed(
                    "upgrade",
                    format!(
                        "the device reported {rom_version:?} after the download, not {:?}",
                        offer.version
                    ),
                ));
            }
            LinkEvent::Upgrade {
                success: false,
                pre_rom_version,
                ..
            } => {
                let file = served.map_or("its bin", |(s, _, _)| s.file_name());
                return Err(HandlerError::failed(
                    "upgrade",
                    format!(
                        "device_upgrade_failed: the device refused {file} of {} (download, CRC \
                         or flash write); it stays on {pre_rom_version}",
                        offer.version
                    ),
                ));
            }
            LinkEvent::Closed(g) if g == generation => {
                let at = served.map_or("before its download started".to_string(), |(s, d, t)| {
                    format!("after {d} of {t} bytes of {}", s.file_name())
                });
                return Err(disconnected(link, &at));
            }
            _ => {}
        }
    }
}

fn stalled(
    offer: &Offer,
    served: Option<(super::user_bin::Slot, u64, u64)>,
    stall: Duration,
) -> HandlerError {
    let v = &offer.version;
    let what = match served {
        None => format!("did not start downloading {v}"),
        Some((s, d, t)) if d < t => {
            format!(
                "stopped downloading {} of {v} at {d} of {t} bytes",
                s.file_name()
            )
        }
        Some((s, _, _)) => format!("downloaded {} of {v} but sent no verdict", s.file_name()),
    };
    let stall = humantime::format_duration(stall);
    HandlerError::failed(
        "download",
        format!("the device {what} (stalled for {stall}); it stays on its old firmware"),
    )
}

fn disconnected(link: &Link, when: &str) -> HandlerError {
    HandlerError::failed(
        "download",
        format!(
            "device {} disconnected {when} (power loss or Wi-Fi); it keeps its old firmware",
            link.id
        ),
    )
}

/// The next event; a lagging receiver only lost download percents.
async fn next(events: &mut Receiver<LinkEvent>) -> Result<LinkEvent, HandlerError> {
    loop {
        match events.recv().await {
            Ok(event) => return Ok(event),
            Err(RecvError::Lagged(n)) => tracing::debug!("esp8266-wifi: {n} events skipped"),
            Err(RecvError::Closed) => {
                return Err(HandlerError::failed("gateway", "the gateway stopped"));
            }
        }
    }
}
