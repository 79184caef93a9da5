//! The domain model shared by sources, the engine and handlers: what firmware is,
//! what a device's firmware status is. Wire formats of servers convert into these
//! types in one place each (`source::*`); nothing here knows about a protocol.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checksum::Checksum;

/// One firmware image for one device type in one version (ESH `Firmware`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    /// The device type (model) the image is built for; must equal the device's `type`.
    pub device_type: String,
    pub version: String,
    /// Where the bytes are; the engine copies or downloads them into the state
    /// directory and verifies them before any handler sees them.
    pub location: FirmwareLocation,
    /// Expected size in bytes, when the source knows it.
    pub size: Option<u64>,
    /// Every checksum the source gave; all of them must match.
    pub checksums: Vec<Checksum>,
    /// What the device must run before this image may be installed.
    pub prerequisite: Option<Prerequisite>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub description: Option<String>,
    pub changelog: Option<String>,
    /// A server's instructions for this particular rollout (hawkBit deployment,
    /// MCS push); `None` for firmware that is merely available.
    pub deployment: Option<Deployment>,
    /// Extra HTTP headers for downloading a [`FirmwareLocation::Url`] (a server's
    /// `Authorization`); empty for most sources.
    pub download_headers: RequestHeaders,
    /// Where the source offers a detached minisign signature of the image (a
    /// hawkBit `<file>.minisig` artifact); fetched with `download_headers`.
    pub signature_url: Option<String>,
    /// Further files of the same firmware, fetched and verified with the image
    /// before the handler sees any of them (an ESP8266's user2.bin beside its
    /// user1.bin); empty for single-file firmware.
    pub parts: Vec<FirmwarePart>,
    /// Which devices the firmware is released to (a Particle product's release
    /// state); server offers are [`Release::All`]: the server already decided.
    pub release: Release,
}

/// Who may take a firmware without being locked to it. An operator uploads a
/// version, tries it on test devices, then releases it to the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Release {
    /// Released: the target of every device of its type.
    #[default]
    All,
    /// Released to the devices of these groups only (`[[device]] group`).
    Groups(Vec<String>),
    /// Uploaded but not released: only devices in a group (test devices) take it.
    Uploaded,
}

impl Release {
    /// The longest group name: it is shown in every `check` line.
    pub const MAX_GROUP_LEN: usize = 64;

    /// Why `name` cannot be a group name (`[A-Za-z0-9._-]`, 1 to 64 characters),
    /// or `None`; one rule for `[[device]] group` and a firmware's `groups`.
    pub fn group_name_problem(name: &str) -> Option<String> {
        if name.is_empty() {
            Some("a group name must not be empty".into())
        } else if name.len() > Release::MAX_GROUP_LEN {
            Some(format!(
                "group name {name:?} is longer than {} characters",
                Release::MAX_GROUP_LEN
            ))
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            Some(format!(
                "group name {name:?} may only contain A-Z, a-z, 0-9, '.', '_' and '-'"
            ))
        } else {
            None
        }
    }
}

/// One further named file of a [`Firmware`]; verified like the main image
/// (size, every checksum, the trust policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwarePart {
    /// What the handler asks for (e.g. [`SECOND_IMAGE`]); a plain name, unique
    /// within the firmware.
    pub name: String,
    pub location: FirmwareLocation,
    pub size: Option<u64>,
    pub checksums: Vec<Checksum>,
}

/// The name of the second image of a two-slot firmware (ESP8266 user2.bin; the
/// main image is user1.bin).
pub const SECOND_IMAGE: &str = "image2";

/// HTTP request headers that may carry credentials: `Debug` shows the names only,
/// so a logged [`Firmware`] never shows a token.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RequestHeaders(pub Vec<(String, String)>);

impl fmt::Debug for RequestHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| format!("{name}: ***")))
            .finish()
    }
}

impl Firmware {
    /// Firmware with only the essentials set.
    pub fn new(device_type: &str, version: &str, location: FirmwareLocation) -> Firmware {
        Firmware {
            device_type: device_type.to_string(),
            version: version.to_string(),
            location,
            size: None,
            checksums: Vec::new(),
            prerequisite: None,
            vendor: None,
            model: None,
            description: None,
            changelog: None,
            deployment: None,
            download_headers: RequestHeaders::default(),
            signature_url: None,
            parts: Vec::new(),
            release: Release::All,
        }
    }

    /// `part` seen as a firmware of its own (same device type, version and
    /// download headers), so it passes the same fetch and trust steps.
    pub fn for_part(&self, part: &FirmwarePart) -> Firmware {
        Firmware {
            location: part.location.clone(),
            size: part.size,
            checksums: part.checksums.clone(),
            signature_url: None,
            parts: Vec::new(),
            ..self.clone()
        }
    }
}

/// How a server wants one step of a deployment handled (hawkBit `skip`, `attempt`,
/// `forced`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Handling {
    /// Not now: for `update`, download (and transfer) only.
    Skip,
    /// The device's policy decides.
    #[default]
    Attempt,
    /// Now, regardless of the device's policy.
    Forced,
}

/// A server's instructions for one rollout of firmware to one device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Deployment {
    /// The server's id for it (hawkBit action id), for reports.
    pub id: String,
    pub download: Handling,
    pub update: Handling,
    /// `Some(false)`: the maintenance window is closed — transfer ahead, update
    /// later.
    pub maintenance_window_open: Option<bool>,
}

impl Deployment {
    /// Whether the update step may run now (else: transfer only, then wait).
    pub fn update_allowed(&self) -> bool {
        self.update != Handling::Skip && self.maintenance_window_open != Some(false)
    }
}

/// A version the device must run before an image may be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prerequisite {
    /// ESH `prerequisiteVersion`: the current version is at least this one.
    AtLeast(String),
    /// MCS prerequisite list: the current version is one of these.
    OneOf(Vec<String>),
}

/// Where a firmware image can be read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirmwareLocation {
    /// A file on the local file system (directory source, `install` command).
    File(PathBuf),
    /// An HTTP(S) URL (server sources).
    Url(String),
    /// Bytes only the source can fetch, through its own protocol (ThingsBoard's
    /// chunked firmware endpoint or MQTT chunk topics). The engine hands the
    /// fetcher a partial file to continue and verifies the result like any
    /// download.
    Remote(RemoteImage),
}

/// An image a source fetches itself; equal when the names are.
#[derive(Clone)]
pub struct RemoteImage {
    /// What the image is, for logs and as a file name (e.g. `thingsboard:fw/esp/2.0`).
    pub name: String,
    pub fetcher: Arc<dyn RemoteFetch>,
}

impl PartialEq for RemoteImage {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for RemoteImage {}

impl fmt::Debug for RemoteImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteImage")
            .field("name", &self.name)
            .finish()
    }
}

/// Done bytes and the total, when known.
pub type FetchReport<'a> = &'a (dyn Fn(u64, Option<u64>) + Send + Sync);

/// A source's own way to fetch an image.
#[async_trait::async_trait]
pub trait RemoteFetch: Send + Sync {
    /// Writes the whole image to `part`, continuing what an earlier attempt left
    /// there when the fetcher can tell it is the same image (else starting over),
    /// and reports progress. Retries transient errors itself; an error is final
    /// for this attempt (the partial file is kept for the next one).
    async fn fetch(&self, part: &Path, report: FetchReport<'_>) -> Result<(), FetchFailure>;
}

/// Why a source's own fetch ([`RemoteFetch`]) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FetchFailure {
    /// The network or the server may do better later (the fetcher's own
    /// retries are used up); false when repeating cannot help (refused by the
    /// server, a local file problem).
    pub transient: bool,
    /// What failed, without secrets.
    pub message: String,
}

impl FetchFailure {
    pub fn transient(message: impl Into<String>) -> FetchFailure {
        FetchFailure {
            transient: true,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> FetchFailure {
        FetchFailure {
            transient: false,
            message: message.into(),
        }
    }
}

impl fmt::Display for FirmwareLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FirmwareLocation::File(p) => write!(f, "{}", p.display()),
            FirmwareLocation::Url(u) => f.write_str(u),
            FirmwareLocation::Remote(r) => f.write_str(&r.name),
        }
    }
}

/// A device's firmware status (ESH `FirmwareStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FirmwareStatus {
    /// The device's version or the firmware available for it cannot be determined.
    Unknown,
    /// No newer firmware is available.
    UpToDate,
    /// Newer firmware exists but the handler says the update cannot run now.
    UpdateAvailable,
    /// Newer firmware exists and the update can run now.
    UpdateExecutable,
}

impl fmt::Display for FirmwareStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FirmwareStatus::Unknown => "UNKNOWN",
            FirmwareStatus::UpToDate => "UP_TO_DATE",
            FirmwareStatus::UpdateAvailable => "UPDATE_AVAILABLE",
            FirmwareStatus::UpdateExecutable => "UPDATE_EXECUTABLE",
        })
    }
}

/// When a device takes newer firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdatePolicy {
    /// Download, transfer and update in one go as soon as firmware is available.
    Immediate,
    /// Transfer ahead of time; run the (quick) update step when the handler says
    /// the update is executable.
    Background,
}
