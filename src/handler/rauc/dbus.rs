//! The RAUC service's D-Bus API as the handler uses it: `de.pengutronix.rauc.Installer`
//! on the system bus (names checked against RAUC's
//! `src/de.pengutronix.rauc.Installer.xml`), and logind's `Reboot`.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::{Connection, OwnedVariant, Variant, proxy};

use crate::handler::HandlerError;

#[proxy(
    interface = "de.pengutronix.rauc.Installer",
    default_service = "de.pengutronix.rauc",
    default_path = "/"
)]
trait Installer {
    /// Installs the bundle at `source` into the inactive slots.
    fn install_bundle(&self, source: &str, args: HashMap<&str, Variant<'_>>) -> zbus::Result<()>;

    /// `state`: "good", "bad" or "active"; `slot`: "booted", "other" or a slot name.
    /// Answers the slot's name and what was done.
    fn mark(&self, state: &str, slot: &str) -> zbus::Result<(String, String)>;

    /// Every slot's name and status (`state` = "booted", `bundle.version`, ...).
    fn get_slot_status(&self) -> zbus::Result<Vec<(String, HashMap<String, OwnedVariant>)>>;

    #[zbus(property)]
    fn operation(&self) -> zbus::Result<String>;

    /// Read from the service, not a cache: it is set just before `Completed`.
    #[zbus(property(emits_changed_signal = "false"))]
    fn last_error(&self) -> zbus::Result<String>;

    /// (percent, message, nesting depth).
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<(i32, String, i32)>;

    #[zbus(property)]
    fn compatible(&self) -> zbus::Result<String>;

    /// Emitted when an installation ends; 0 is success.
    #[zbus(signal)]
    fn completed(&self, result: i32) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait Login {
    /// `interactive`: whether polkit may ask a user (never, for a service).
    fn reboot(&self, interactive: bool) -> zbus::Result<()>;
}

/// Pause between attempts while the service is not up yet.
const RETRY: Duration = Duration::from_millis(500);

/// One slot as `GetSlotStatus` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    /// "booted", "active" or "inactive".
    pub state: String,
    /// The version of the bundle last installed into it, when RAUC recorded one.
    pub bundle_version: Option<String>,
}

/// A connection to the RAUC service on the system bus (`DBUS_SYSTEM_BUS_ADDRESS`
/// or the standard socket).
pub struct Rauc {
    conn: Connection,
    installer: InstallerProxy<'static>,
}

fn bus_error(what: &str, e: zbus::Error) -> HandlerError {
    HandlerError::failed("rauc", format!("{what}: {e}"))
}

impl Rauc {
    pub async fn connect() -> Result<Self, HandlerError> {
        let conn = Connection::system()
            .await
            .map_err(|e| bus_error("cannot connect to the system bus", e))?;
        let installer = InstallerProxy::new(&conn)
            .await
            .map_err(|e| bus_error("no RAUC service on the system bus", e))?;
        Ok(Rauc { conn, installer })
    }

    /// The system's compatible string (`[system] compatible` of system.conf).
    pub async fn compatible(&self) -> Result<String, HandlerError> {
        self.installer
            .compatible()
            .await
            .map_err(|e| bus_error("cannot read RAUC's Compatible", e))
    }

    pub async fn slots(&self) -> Result<Vec<Slot>, HandlerError> {
        let raw = self
            .installer
            .get_slot_status()
            .await
            .map_err(|e| bus_error("GetSlotStatus", e))?;
        let text = |d: &HashMap<String, OwnedVariant>, k: &str| {
            d.get(k).and_then(|v| String::try_from(&**v).ok())
        };
        Ok(raw
            .into_iter()
            .map(|(name, d)| Slot {
                state: text(&d, "state").unwrap_or_default(),
                bundle_version: text(&d, "bundle.version").filter(|v| !v.is_empty()),
                name,
            })
            .collect())
    }

    /// The slot the system booted from.
    pub async fn booted(&self) -> Result<Slot, HandlerError> {
        self.slots()
            .await?
            .into_iter()
            .find(|s| s.state == "booted")
            .ok_or_else(|| HandlerError::failed("rauc", "RAUC reports no booted slot"))
    }

    /// A connection and the booted slot, asked again every half second until
    /// RAUC answers or `within` has passed (then the last error).
    pub async fn booted_when_up(within: Duration) -> Result<(Self, Slot), HandlerError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let found = async {
                let rauc = Rauc::connect().await?;
                let booted = rauc.booted().await?;
                Ok((rauc, booted))
            }
            .await;
            match found {
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::info!("waiting for the RAUC service: {e}");
                    tokio::time::sleep(RETRY).await;
                }
                found => return found,
            }
        }
    }

    /// `Mark(state, slot)`; answers RAUC's message.
    pub async fn mark(&self, state: &str, slot: &str) -> Result<String, HandlerError> {
        let (_, message) = self
            .installer
            .mark(state, slot)
            .await
            .map_err(|e| bus_error(&format!("Mark({state}, {slot})"), e))?;
        Ok(message)
    }

    /// Installs `bundle`, calling `percent` with RAUC's progress, until the
    /// `Completed` signal; a failure carries RAUC's `LastError`.
    pub async fn install(
        &self,
        bundle: &str,
        mut percent: impl FnMut(u8),
    ) -> Result<(), HandlerError> {
        // Subscribed before the call, so neither the end nor a step is missed.
        let mut completed = self
            .installer
            .receive_completed()
            .await
            .map_err(|e| bus_error("cannot subscribe to Completed", e))?;
        let mut progress = self.installer.receive_progress_changed().await;
        // RAUC dying mid-install sends no Completed; its name leaving the bus says so.
        let mut owner = self
            .installer
            .inner()
            .receive_owner_changed()
            .await
            .map_err(|e| bus_error("cannot watch the RAUC service", e))?;
        self.installer
            .install_bundle(bundle, HashMap::new())
            .await
            .map_err(|e| bus_error("InstallBundle", e))?;
        loop {
            tokio::select! {
                signal = completed.next() => {
                    let Some(signal) = signal else {
                        return Err(HandlerError::failed("rauc", "the connection to the system bus closed during the installation"));
                    };
                    let result = signal.args().map_err(|e| bus_error("Completed", e))?.result;
                    if result == 0 {
                        // The last Progress change may still be on its way.
                        percent(100);
                        return Ok(());
                    }
                    let reason = self.installer.last_error().await.unwrap_or_default();
                    return Err(HandlerError::failed("rauc", format!("RAUC refused the bundle: {reason}")));
                }
                Some(None) = owner.next() => {
                    return Err(HandlerError::failed("rauc", "the RAUC service left the bus during the installation"));
                }
                Some(change) = progress.next() => {
                    if let Ok((p, _, _)) = change.get().await {
                        percent(p.clamp(0, 100) as u8);
                    }
                }
            }
        }
    }

    /// Asks logind to reboot (non-interactive: polkit must allow it outright).
    pub async fn logind_reboot(&self) -> Result<(), HandlerError> {
        let login = LoginProxy::new(&self.conn)
            .await
            .map_err(|e| bus_error("logind", e))?;
        login
            .reboot(false)
            .await
            .map_err(|e| bus_error("logind Reboot", e))
    }
}
