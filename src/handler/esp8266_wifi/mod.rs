//! `handler = "esp8266-wifi"`: the gateway as the ESP8266 FOTA server of
//! Espressif's IoT_Demo firmware. Devices on the LAN resolve `iot.espressif.cn`
//! to the gateway; the agent offers them the verified user1.bin / user2.bin pair
//! of a firmware, each device downloads the bin of the slot it does not run,
//! reports its verdict and reboots into it (see docs/handler-esp8266-wifi.md).

pub mod cloud;
pub mod config;
pub mod frames;
pub mod gateway;
pub mod link;
pub mod rom;
pub mod upgrade;
pub mod user_bin;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast::error::RecvError;

use self::config::Esp8266WifiConfig;
use self::gateway::Gateway;
use self::link::{Link, Offer};
use self::user_bin::Slot;
use crate::handler::{HandlerError, UpdateHandler, VerifiedImage};
use crate::model::SECOND_IMAGE;
use crate::progress::Progress;

/// The version field the firmware copies is exactly this long.
const VERSION_LEN: usize = 15;

pub struct Esp8266WifiHandler {
    id: String,
    config: Esp8266WifiConfig,
    gateway: Arc<Gateway>,
    link: Arc<Link>,
}

impl Esp8266WifiHandler {
    pub fn new(id: &str, config: &Esp8266WifiConfig) -> Self {
        let gateway = Gateway::shared(config.cloud_listen, config.rom_listen);
        let link = gateway.register(config.key.expose(), id);
        // Listen from the start when there is a runtime, so devices can connect
        // before the first cycle asks for their version.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let gateway = gateway.clone();
            rt.spawn(async move {
                if let Err(e) = gateway.start().await {
                    tracing::error!("esp8266-wifi: {e}");
                }
            });
        }
        Esp8266WifiHandler {
            id: id.to_string(),
            config: config.clone(),
            gateway,
            link,
        }
    }

    /// The pair of `image` as the device will check it: a 15-character version
    /// of this device's ptype, user1.bin and user2.bin each linked for its slot
    /// with a correct CRC.
    async fn offer_for(&self, image: &VerifiedImage) -> Result<Offer, HandlerError> {
        let version = image.firmware().version.clone();
        let ptype = format!("t{}(", self.config.ptype);
        if version.len() != VERSION_LEN || !version.is_ascii() {
            return Err(HandlerError::failed(
                "offer",
                format!(
                    "version {version:?} is not {VERSION_LEN} characters \
                     (IoT_Demo reads exactly 15, e.g. v1.1.0t45772(a))"
                ),
            ));
        }
        if !version.contains(&ptype) {
            return Err(HandlerError::failed(
                "offer",
                format!(
                    "version {version:?} is not of this device's ptype {}",
                    self.config.ptype
                ),
            ));
        }
        let Some(second) = image.part(SECOND_IMAGE) else {
            return Err(HandlerError::failed(
                "offer",
                "the firmware has no user2.bin (image2); an ESP8266 needs both bins",
            ));
        };
        let user1 = checked(image.path().to_path_buf(), Slot::User1).await?;
        let user2 = checked(second.path().to_path_buf(), Slot::User2).await?;
        Ok(Offer {
            version,
            user1,
            user2,
        })
    }
}

/// The bin at `path`, checked for `slot`, and its length.
async fn checked(
    path: std::path::PathBuf,
    slot: Slot,
) -> Result<(std::path::PathBuf, u64), HandlerError> {
    let io = |e| HandlerError::io(format!("{}", path.display()), e);
    let file = std::fs::File::open(&path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    tokio::task::spawn_blocking(move || {
        user_bin::check_from(std::io::BufReader::new(file), len, slot)
    })
    .await
    .map_err(|e| HandlerError::failed("offer", e.to_string()))?
    .map_err(|e| HandlerError::failed("offer", format!("{} refused: {e}", slot.file_name())))?;
    Ok((path, len))
}

#[async_trait]
impl UpdateHandler for Esp8266WifiHandler {
    /// The version the device told on activation, or the one it was last
    /// updated to. Until the device first identified itself (an activating
    /// device restarts first), this waits for it up to `connect_timeout`.
    async fn current_version(&self) -> Result<Option<String>, HandlerError> {
        self.gateway.start().await?;
        if !self.link.seen() {
            let mut events = self.link.subscribe();
            let identified = async {
                while !self.link.seen() {
                    if let Err(RecvError::Closed) = events.recv().await {
                        return;
                    }
                }
            };
            if tokio::time::timeout(self.config.connect_timeout, identified)
                .await
                .is_err()
            {
                tracing::info!(device = %self.id, "esp8266-wifi device has not connected");
            }
        }
        Ok(self.link.version())
    }

    /// Only while the device is connected and identified.
    async fn is_update_executable(&self) -> Result<bool, HandlerError> {
        self.gateway.start().await?;
        Ok(self.link.ready_generation().is_some())
    }

    async fn update(&self, image: &VerifiedImage, progress: &Progress) -> Result<(), HandlerError> {
        self.gateway.start().await?;
        let offer = Arc::new(self.offer_for(image).await?);
        upgrade::run(&self.link, offer, progress, self.config.stall_timeout).await
    }
}
