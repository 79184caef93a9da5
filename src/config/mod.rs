//! The agent's configuration: `/etc/fota-agent/config.toml` parsed with serde
//! (`deny_unknown_fields`) and validated, so that every error names the file, the
//! line and the key, e.g. `config.toml:14: device "esp-1": unknown handler "esp8267"`.
//!
//! The agent runs unattended on a gateway, so a config mistake must be reported
//! once, precisely, before anything starts — never as a panic or a silently ignored
//! key. Parsing is therefore split in two: `raw` mirrors the file with serde
//! (unknown keys are errors; checked values keep their spans) and `validate`
//! turns that into the types below, filling in defaults and resolving relative
//! paths against the config file's directory. Errors are [`ConfigError`]s, one line
//! each, `<path>:<line>: <message>`.

mod error;
mod raw;
mod validate;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::UpdatePolicy;
use crate::version::VersionScheme;

pub use error::ConfigError;
pub use validate::MAX_CONCURRENT_UPDATES;

/// Default location of the config file.
pub const DEFAULT_PATH: &str = "/etc/fota-agent/config.toml";

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub agent: AgentConfig,
    pub source: SourceConfig,
    /// How firmware is downloaded over HTTP(S): the download keys of `[source]`
    /// (`ca_bundle`, `client_cert`, `client_key`, `https_only`, `connect_timeout`,
    /// `stall_timeout`, `download_attempts`, `max_image_size`).
    pub download: crate::download::DownloadConfig,
    pub status: StatusConfig,
    pub devices: Vec<DeviceConfig>,
}

/// `[status]`: the local status endpoint (see README, "Operating fota-agent").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    /// TCP address of the HTTP endpoint; default `127.0.0.1:8470`; `None` when
    /// `listen = "off"`.
    pub listen: Option<std::net::SocketAddr>,
    /// A unix socket serving the same endpoint, actions included (file mode 0660:
    /// the service's group may act). A relative path is resolved against the config
    /// file's directory. Default: none.
    pub socket: Option<PathBuf>,
    /// Bearer token that allows actions (POST) over TCP. Without it actions are
    /// refused over TCP.
    pub token: Option<String>,
}

/// Default `[status] listen`.
pub const DEFAULT_STATUS_LISTEN: &str = "127.0.0.1:8470";

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            listen: DEFAULT_STATUS_LISTEN.parse().ok(),
            socket: None,
            token: None,
        }
    }
}

/// `[agent]`. A relative `state_dir` is resolved against the config file's
/// directory.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Default `/var/lib/fota-agent`.
    pub state_dir: PathBuf,
    /// How often sources are polled; default 1 h.
    pub poll_interval: Duration,
    /// An update still running after this fails; default 30 min.
    pub update_timeout: Duration,
    /// At most this many updates at once across all devices; default 1, at least 1
    /// (and at most [`MAX_CONCURRENT_UPDATES`]).
    pub max_concurrent_updates: usize,
}

/// `[source]`, chosen by `kind`.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// `kind = "directory"`: an ESH filesystem-provider tree at `path`
    /// (default `<state_dir>/firmware`). Also the default when `[source]` is absent.
    /// A relative `path` is resolved against the config file's directory.
    Directory { path: PathBuf },
    /// `kind = "hawkbit"`: an Eclipse hawkBit server over its Direct Device
    /// Integration (DDI) API.
    Hawkbit(HawkbitConfig),
    /// `kind = "mcs"`: MediaTek Cloud Sandbox (REST + command server push).
    Mcs(McsConfig),
    /// `kind = "thingsboard"`: ThingsBoard's device API (see README, "ThingsBoard
    /// source").
    Thingsboard(Box<ThingsboardConfig>),
}

/// Keys of `kind = "mcs"`. See README, "MCS source".
#[derive(Debug, Clone, PartialEq)]
pub struct McsConfig {
    /// The REST API root; default `https://api.mediatek.com/mcs/v2`.
    pub base_url: String,
    /// Which agent device each MCS device is: the gateway's own `device_id` /
    /// `device_key` (bound to `gateway_device`, default `"gateway"`) plus every
    /// `[source.devices]` entry. At least one; agent device ids and MCS device ids
    /// are unique among them.
    pub devices: Vec<McsDevice>,
    /// `host:port` of the command server; default: asked from the REST API
    /// (`GET devices/{deviceId}/connections`).
    pub command_server: Option<String>,
    /// How often the command channel sends its heartbeat; default 60 s (MCS drops
    /// a device silent for 120 s).
    pub heartbeat_interval: Duration,
    /// A push whose timestamp is older than this is refused as stale; default 10 min.
    pub max_push_age: Duration,
    /// The string data channel progress and outcomes are uploaded to; default
    /// `fota_status`; `""` turns reporting off.
    pub status_channel: Option<String>,
}

/// One agent device and its MCS identity. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct McsDevice {
    /// The `[[device]]` id in this config.
    pub agent_device: String,
    pub device_id: String,
    pub device_key: String,
}

impl std::fmt::Debug for McsDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McsDevice")
            .field("agent_device", &self.agent_device)
            .field("device_id", &self.device_id)
            .field("device_key", &"<redacted>")
            .finish()
    }
}

/// Keys of `kind = "hawkbit"`.
#[derive(Debug, Clone, PartialEq)]
pub struct HawkbitConfig {
    /// The server's base URL (`https://hawkbit.example.com`), without a trailing `/`.
    pub url: String,
    /// Default `DEFAULT`.
    pub tenant: String,
    /// The gateway's controller id; `None`: the content of `/etc/machine-id`.
    pub controller_id: Option<String>,
    pub auth: HawkbitAuth,
    /// Never poll more often than this, whatever the server says; default 30 s.
    pub min_poll_interval: Duration,
    /// Which chunk of a deployment goes to which device (`chunks` table); a
    /// device not listed takes the chunk whose name is its id or else its type.
    pub devices: Vec<(String, ChunkSelector)>,
}

/// How the gateway authenticates to hawkBit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HawkbitAuth {
    /// No `Authorization` header (anonymous targets, tests).
    None,
    /// `target_token`: `Authorization: TargetToken <token>`.
    TargetToken(Secret),
    /// `gateway_token`: `Authorization: GatewayToken <token>`.
    GatewayToken(Secret),
}

impl HawkbitAuth {
    /// The `Authorization` header value, if any.
    pub fn header(&self) -> Option<String> {
        match self {
            HawkbitAuth::None => None,
            HawkbitAuth::TargetToken(t) => Some(format!("TargetToken {}", t.expose())),
            HawkbitAuth::GatewayToken(t) => Some(format!("GatewayToken {}", t.expose())),
        }
    }
}

/// A credential: never shown by `Debug` or `Display`, so it cannot end up in a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Which chunk of a hawkBit deployment a device takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkSelector {
    /// `part:<part>`: the chunk whose `part` (software module type) is this.
    Part(String),
    /// `name:<name>`: the chunk whose `name` (software module name) is this.
    Name(String),
}

/// How the agent talks to ThingsBoard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThingsboardTransport {
    /// `transport = "http"` (default): the HTTP device API under `url`
    /// (e.g. `https://tb.example.com`).
    Http { url: String },
    /// `transport = "mqtt"`: the MQTT device API on `host`:`port` (default 1883),
    /// one connection per access token (the token is the MQTT user name).
    Mqtt { host: String, port: u16 },
}

/// A ThingsBoard device access token; never shown in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(pub String);

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(***)")
    }
}

/// Which ThingsBoard OTA package type an engine device follows: `fw_*` or `sw_*`
/// attributes and telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtaKind {
    Firmware,
    Software,
}

/// One `[[device]]` bound to one ThingsBoard device (its token) and package type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingsboardBinding {
    pub device_id: String,
    pub token: AccessToken,
    pub kind: OtaKind,
}

/// Keys of `kind = "thingsboard"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ThingsboardConfig {
    pub transport: ThingsboardTransport,
    /// Every device the source serves: `gateway_device` (the gateway's
    /// `access_token`, `fw_*`), `software_device` (the same token, `sw_*`) and each
    /// `[source.tokens]` entry (its own token, `fw_*`).
    pub bindings: Vec<ThingsboardBinding>,
    /// Bytes per firmware chunk request; default 64 KiB.
    pub chunk_size: u32,
    /// Long-poll timeout of the HTTP attribute subscription; default 30 s.
    pub poll_timeout: Duration,
    /// Where queued reports and the source's state live: `<state_dir>/thingsboard`.
    pub state_dir: PathBuf,
    /// TLS and retry settings shared with the download engine.
    pub download: crate::download::DownloadConfig,
}

/// One `[[device]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    /// Unique among devices; `[A-Za-z0-9._-]+` (it names files in the state dir).
    pub id: String,
    /// The type (model) firmware must be built for (`type` in TOML).
    pub device_type: String,
    /// Default `immediate`.
    pub policy: UpdatePolicy,
    /// Default `esh`.
    pub version_scheme: VersionScheme,
    /// Refuse firmware that is not newer than what the device runs; default true.
    pub only_newer: bool,
    pub handler: HandlerConfig,
}

/// The device's handler and its handler-specific keys.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerConfig {
    /// `handler = "command"`.
    Command(CommandConfig),
    /// `handler = "esp8266"`: the Espressif ROM serial bootloader.
    Esp8266(Esp8266Config),
    /// `handler = "xmodem"`: XMODEM / XMODEM-1K / YMODEM to an MCU bootloader.
    Xmodem(XmodemConfig),
    /// `handler = "mt7681"`: MediaTek MT7681 (LinkIt Connect 7681) UART upgrade
    /// (`AT#Reboot`, recovery mode, `AT#UpdateFW`, XMODEM).
    Mt7681(Mt7681Config),
}

impl HandlerConfig {
    /// The handler's name as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            HandlerConfig::Command(_) => "command",
            HandlerConfig::Esp8266(_) => "esp8266",
            HandlerConfig::Xmodem(_) => "xmodem",
            HandlerConfig::Mt7681(_) => "mt7681",
        }
    }
}

/// Keys of `handler = "command"`: argv arrays of executables (see README, "Command
/// handler protocol"). Each array is non-empty with a non-empty program (first
/// element). A program containing `/` that is relative (`./bin/update.sh`) is
/// resolved against the config file's directory; a bare name (`sh`) is left for
/// `PATH` lookup, and the other arguments are passed as written.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandConfig {
    /// Prints the device's current version on stdout. Without it the version is
    /// unknown.
    pub version_command: Option<Vec<String>>,
    /// Exit 0: the update can run now; exit 1: not now. Without it: always.
    pub executable_command: Option<Vec<String>>,
    /// Moves the image to the device ahead of the update (background transfer).
    pub transfer_command: Option<Vec<String>>,
    /// Installs the image (required).
    pub update_command: Vec<String>,
    /// Limit for the version and executable commands; default 60 s. Transfer and
    /// update are bounded by `agent.update_timeout`.
    pub command_timeout: Duration,
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config `text`. `path` names the file in messages
    /// (`path.display()`, as given) and its directory is what relative paths are
    /// resolved against; the file itself is not read.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::from_toml(&e, text, path))?;
        validate::Validator::new(text, path).config(raw)
    }
}

/// The UART a serial handler talks to (`port`, `baud`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialConfig {
    /// E.g. `/dev/ttyUSB0`.
    pub port: PathBuf,
    /// Default 115200.
    pub baud: u32,
}

/// How the ESP8266 is put into its ROM bootloader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EspReset {
    /// esptool's classic DTR/RTS sequence (EN and GPIO0 wired to RTS and DTR).
    #[default]
    Classic,
    /// The device is already in its bootloader (or is put there by other means).
    None,
}

/// Keys of `handler = "esp8266"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Esp8266Config {
    pub serial: SerialConfig,
    /// Flash address of the image; a multiple of 4 KiB; default 0.
    pub flash_offset: u32,
    /// Default `classic`.
    pub reset: EspReset,
    /// Reports the application's version (the ROM cannot); see the command handler.
    pub version_command: Option<Vec<String>>,
    /// Limit for `version_command`; default 60 s.
    pub command_timeout: Duration,
}

/// Which XMODEM family protocol a bootloader speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum XmodemProtocol {
    /// 128-byte blocks (CRC-16 or checksum, as the receiver asks).
    #[default]
    #[serde(rename = "xmodem")]
    Xmodem,
    /// 1024-byte blocks.
    #[serde(rename = "xmodem-1k")]
    Xmodem1k,
    /// 1024-byte blocks after a header block with file name and size.
    #[serde(rename = "ymodem")]
    Ymodem,
}

/// Keys of `handler = "xmodem"`.
#[derive(Debug, Clone, PartialEq)]
pub struct XmodemConfig {
    pub serial: SerialConfig,
    /// Default `xmodem`.
    pub protocol: XmodemProtocol,
    /// Sent first to make the application jump into its bootloader (e.g. "update\r").
    pub enter_command: Option<String>,
    /// How long to wait for the receiver's start, ACK or NAK; default 10 s.
    pub response_timeout: Duration,
    /// Retries of one block (and of the start) before the update fails; default 10.
    pub retries: u32,
    /// Reports the application's version; see the command handler.
    pub version_command: Option<Vec<String>>,
    /// Limit for `version_command`; default 60 s.
    pub command_timeout: Duration,
}

/// The MT7681 flash region an image is written to: the "type" byte of the
/// 128-byte upgrade header (`UART_FlASH_UPG_ID` in the MT7681 SDK's
/// `flash_map.h`, 1 to 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum Mt7681Region {
    /// Type 1, the boot loader (flash 0x0000, 20 KiB).
    #[serde(rename = "loader")]
    Loader,
    /// Type 2, the recovery (uploader) firmware (0x6000, 64 KiB).
    #[serde(rename = "recovery")]
    Recovery,
    /// Type 3, the EEPROM / calibration block (0x17000, 4 KiB).
    #[serde(rename = "eeprom")]
    Eeprom,
    /// Type 4, the station firmware (0x1F000; 188 KiB with its XIP part).
    #[default]
    #[serde(rename = "sta")]
    Sta,
    /// Type 5, the station firmware's XIP/overlay part alone (0x30000, 120 KiB).
    #[serde(rename = "sta-xip")]
    StaXip,
    /// Type 6, the soft-AP firmware (0x4F000; 188 KiB with its XIP part).
    #[serde(rename = "ap")]
    Ap,
    /// Type 7, the soft-AP firmware's XIP/overlay part alone (0x60000, 120 KiB).
    #[serde(rename = "ap-xip")]
    ApXip,
}

/// Keys of `handler = "mt7681"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mt7681Config {
    /// Default 115200 (what MediaTek's `mt7681_uploader.py` uses).
    pub serial: SerialConfig,
    /// The region images must be built for (header type byte); default `sta`.
    pub region: Mt7681Region,
    /// Longest wait for "Recovery Mode", the receiver's start, an ACK or a NAK;
    /// default 10 s.
    pub response_timeout: Duration,
    /// Attempts of entering recovery mode, of the start and of each block; default 10.
    pub retries: u32,
    /// Reports the module's version (required: the MT7681 only upgrades to a
    /// higher version, so the handler must know the current one).
    pub version_command: Vec<String>,
    /// Limit for `version_command`; default 60 s.
    pub command_timeout: Duration,
}
