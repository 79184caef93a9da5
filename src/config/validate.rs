//! Second pass: turns the common keys into the validated [`Config`] — defaults,
//! durations, enums, ranges, ids, required keys, relative paths — and hands each
//! `[[device]]`'s other keys to its handler and `[source]`'s to its kind (through
//! the registries in [`crate::handler::config`] and [`crate::source::config`]).
//! Every failure is a [`ConfigError`] carrying the line of the offending value and
//! its key.
//!
//! Relative paths are resolved against the directory of the config file as given
//! (`path.parent()`), so a config next to its scripts and firmware tree works from
//! anywhere: this applies to `agent.state_dir`, `source.path` and the program (first
//! element) of a command when it contains a `/`. A bare program name (`["sh", …]`)
//! is left alone for `PATH` lookup, as are all other arguments.
//!
//! Beyond what the field docs say, `max_concurrent_updates` is at most
//! [`MAX_CONCURRENT_UPDATES`] so that absurd values cannot overflow semaphores.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::check::Checker;
use super::parse::{RawAgent, RawConfig, RawDevice, RawSource, RawStatus, Section};
use super::table::Table;
use super::{
    AgentConfig, Config, ConfigError, DEFAULT_STATUS_HEADER_TIMEOUT, DeviceConfig,
    MAX_STATUS_CONNECTIONS, SourceConfig, StatusConfig,
};
use crate::download::DownloadConfig;
use crate::handler::config::{self as handlers, DeviceKeys};
use crate::model::UpdatePolicy;
use crate::source::config::{self as sources, SourceKeys};

/// Upper bound of `agent.max_concurrent_updates`.
pub const MAX_CONCURRENT_UPDATES: usize = 1024;

const DEFAULT_STATE_DIR: &str = "/var/lib/fota-agent";
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60 * 60);
const DEFAULT_UPDATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const DEFAULT_CONFIRM_WINDOW: Duration = Duration::from_secs(3 * 60);
const KNOWN_POLICIES: &str = "immediate, background";
const KNOWN_VERSION_SCHEMES: &str = "esh, espressif, particle, semver";
const MAX_ID_LEN: usize = 128;

/// Validates the first pass's result. Order: `[agent]`, the devices, `[source]`
/// (which may name devices), `[status]`, `[trust]`; the first error wins.
pub(super) fn config(check: &Checker<'_>, raw: RawConfig<'_>) -> Result<Config, ConfigError> {
    let agent = agent(check, raw.agent.unwrap_or_default())?;
    let mut devices = Vec::with_capacity(raw.device.len());
    // id -> line of its first definition
    let mut seen: HashMap<String, usize> = HashMap::new();
    for section in raw.device {
        devices.push(device(check, section, &mut seen)?);
    }
    let (source, download) = match raw.source {
        Some(section) => {
            let download = download(check, &section.common)?;
            let keys = SourceKeys {
                check,
                start: section.start,
                agent: &agent,
                devices: &devices,
                download: &download,
            };
            (source(&keys, section.common, section.rest)?, download)
        }
        None => (
            SourceConfig::Directory {
                path: agent.state_dir.join("firmware"),
            },
            // No [source]: the directory source; https_only keeps its secure default.
            DownloadConfig {
                https_only: true,
                ..DownloadConfig::default()
            },
        ),
    };
    let status = status(check, raw.status.unwrap_or_default())?;
    let trust = crate::trust::config::validate(check, raw.trust.unwrap_or_default())?;
    Ok(Config {
        path: check.path().to_path_buf(),
        agent,
        source,
        download,
        status,
        trust,
        devices,
        literal_secrets: check.literal_secrets().names(),
    })
}

fn status(check: &Checker<'_>, raw: RawStatus) -> Result<StatusConfig, ConfigError> {
    let mut status = StatusConfig::default();
    if let Some(listen) = &raw.listen {
        let value = listen.get_ref().trim();
        status.listen = if value == "off" {
            None
        } else {
            Some(value.parse().map_err(|_| {
                let msg = format!(
                    "status.listen: expected an address with a port such as \
                     \"127.0.0.1:8470\" or \"off\", got {value:?}"
                );
                check.at(listen, "listen", msg)
            })?)
        };
    }
    if let Some(socket) = &raw.socket {
        status.socket = Some(check.dir(socket, "socket", "status.socket")?);
    }
    if let Some(token) = &check.opt_secret(&raw.token, "token", "status.token")? {
        let value = token.get_ref();
        if value.len() < 16 || !value.bytes().all(|b| b.is_ascii_graphic()) {
            let msg = "status.token: must be at least 16 printable ASCII characters \
                       without spaces"
                .to_string();
            return Err(check.at(token, "token", msg));
        }
        status.token = Some(value.clone());
    }
    if let Some(n) = &raw.max_connections {
        status.max_connections = check.int(
            n,
            "max_connections",
            |n| (1..=MAX_STATUS_CONNECTIONS).contains(n),
            |n| format!("status.max_connections: must be between 1 and {MAX_STATUS_CONNECTIONS}, got {n}"),
        )?;
    }
    status.header_timeout = check.duration_or(
        &raw.header_timeout,
        "header_timeout",
        "status.header_timeout",
        DEFAULT_STATUS_HEADER_TIMEOUT,
    )?;
    remote(check, &raw, &mut status)?;
    Ok(status)
}

/// `allow_remote`: a non-loopback `listen` is refused without it (device data
/// and actions would face the network), and with it the token is required.
fn remote(
    check: &Checker<'_>,
    raw: &RawStatus,
    status: &mut StatusConfig,
) -> Result<(), ConfigError> {
    status.allow_remote = raw.allow_remote.as_ref().is_some_and(|a| *a.get_ref());
    if let (Some(addr), Some(listen)) = (status.listen, &raw.listen)
        && !addr.ip().is_loopback()
        && !status.allow_remote
    {
        let msg = format!(
            "status.listen: {addr} is not a loopback address; write allow_remote = true \
             in [status] (and a token, which reads then need) to serve the network"
        );
        return Err(check.at(listen, "listen", msg));
    }
    if let Some(allow) = &raw.allow_remote
        && status.allow_remote
        && status.token.is_none()
    {
        let msg = "status.allow_remote: needs a [status] token (every request over TCP \
                   then needs it)"
            .to_string();
        return Err(check.at(allow, "allow_remote", msg));
    }
    Ok(())
}

fn agent(check: &Checker<'_>, raw: RawAgent) -> Result<AgentConfig, ConfigError> {
    let state_dir = match raw.state_dir {
        Some(dir) => check.dir(&dir, "state_dir", "agent.state_dir")?,
        None => PathBuf::from(DEFAULT_STATE_DIR),
    };
    let poll_interval = check.duration_or(
        &raw.poll_interval,
        "poll_interval",
        "agent.poll_interval",
        DEFAULT_POLL_INTERVAL,
    )?;
    let update_timeout = check.duration_or(
        &raw.update_timeout,
        "update_timeout",
        "agent.update_timeout",
        DEFAULT_UPDATE_TIMEOUT,
    )?;
    let confirm_window = check.duration_or(
        &raw.confirm_window,
        "confirm_window",
        "agent.confirm_window",
        DEFAULT_CONFIRM_WINDOW,
    )?;
    let max_concurrent_updates = match &raw.max_concurrent_updates {
        Some(n) => check.int(
            n,
            "max_concurrent_updates",
            |n| (1..=MAX_CONCURRENT_UPDATES).contains(n),
            |n| {
                format!(
                    "agent.max_concurrent_updates: must be between 1 and \
                     {MAX_CONCURRENT_UPDATES}, got {n}"
                )
            },
        )?,
        None => 1,
    };
    Ok(AgentConfig {
        state_dir,
        poll_interval,
        update_timeout,
        confirm_window,
        max_concurrent_updates,
    })
}

/// The download keys of `[source]`.
fn download(check: &Checker<'_>, raw: &RawSource) -> Result<DownloadConfig, ConfigError> {
    let mut d = DownloadConfig::default();
    let file = |v: &Option<Spanned<String>>, key: &str| {
        v.as_ref()
            .map(|p| check.dir(p, key, &format!("source.{key}")))
            .transpose()
    };
    d.ca_bundle = file(&raw.ca_bundle, "ca_bundle")?;
    d.client_cert = file(&raw.client_cert, "client_cert")?;
    d.client_key = file(&raw.client_key, "client_key")?;
    if let (Some(key), None) = (&raw.client_key, &raw.client_cert) {
        let msg = "source.client_key: needs client_cert".to_string();
        return Err(check.at(key, "client_key", msg));
    }
    // Secure by default: plain HTTP only when written (see SourceKeys::require_https).
    d.https_only = raw.https_only.unwrap_or(true);
    let (connect, stall) = (d.connect_timeout, d.stall_timeout);
    let name = |key: &str| format!("source.{key}");
    d.connect_timeout = check.duration_or(
        &raw.connect_timeout,
        "connect_timeout",
        &name("connect_timeout"),
        connect,
    )?;
    d.stall_timeout = check.duration_or(
        &raw.stall_timeout,
        "stall_timeout",
        &name("stall_timeout"),
        stall,
    )?;
    if let Some(n) = &raw.download_attempts {
        d.max_attempts = check.int(
            n,
            "download_attempts",
            |n| (1..=100).contains(n),
            |n| format!("source.download_attempts: must be between 1 and 100, got {n}"),
        )?;
    }
    if let Some(n) = &raw.max_image_size {
        d.max_image_size = Some(check.int(
            n,
            "max_image_size",
            |n: &u64| *n > 0,
            |n| format!("source.max_image_size: must be a positive number of bytes, got {n}"),
        )?);
    }
    download_limits(check, raw, &mut d)?;
    Ok(d)
}

/// The keys that bound a download in time, rate and disk (see `download::limits`).
fn download_limits(
    check: &Checker<'_>,
    raw: &RawSource,
    d: &mut DownloadConfig,
) -> Result<(), ConfigError> {
    let name = |key: &str| format!("source.{key}");
    d.retry_budget = check.duration_or(
        &raw.retry_budget,
        "retry_budget",
        &name("retry_budget"),
        d.retry_budget,
    )?;
    d.deadline = check.duration_or(
        &raw.download_timeout,
        "download_timeout",
        &name("download_timeout"),
        d.deadline,
    )?;
    if let Some(n) = &raw.min_download_rate {
        d.min_rate = check.int(
            n,
            "min_download_rate",
            |_: &u64| true,
            |n| format!("source.min_download_rate: must be bytes per second (0 or more), got {n}"),
        )?;
    }
    if let Some(n) = &raw.free_space_reserve {
        d.free_space_reserve = check.int(
            n,
            "free_space_reserve",
            |_: &u64| true,
            |n| {
                format!("source.free_space_reserve: must be a number of bytes (0 or more), got {n}")
            },
        )?;
    }
    Ok(())
}

/// `[source]`: its kind, and the kind's own keys.
fn source(
    keys: &SourceKeys<'_>,
    raw: RawSource,
    rest: Table<'_>,
) -> Result<SourceConfig, ConfigError> {
    let check = keys.check;
    let Some(kind) = &raw.kind else {
        let msg = format!("source: missing key \"kind\" (known: {})", sources::known());
        return Err(check.error(keys.start, Some("kind"), msg));
    };
    let name = kind.get_ref().as_str();
    let Some(entry) = sources::find(name) else {
        let msg = format!(
            "source: unknown kind {name:?} (known: {})",
            sources::known()
        );
        return Err(check.at(kind, "kind", msg));
    };
    // Keys of other kinds are mistakes, not silently ignored settings.
    if let Some((key, at)) = rest.foreign_key(sources::source_keys(), &entry.owner) {
        let msg = format!("source: key {key:?} does not apply to kind {name:?}");
        return Err(check.error(at, Some(key), msg));
    }
    (entry.build)(rest, keys)
}

fn device(
    check: &Checker<'_>,
    section: Section<'_, RawDevice>,
    seen: &mut HashMap<String, usize>,
) -> Result<DeviceConfig, ConfigError> {
    let (start, raw) = (section.start, section.common);
    let Some(id_value) = &raw.id else {
        return Err(check.error(start, Some("id"), "device: missing key \"id\"".into()));
    };
    let id = id_value.get_ref().clone();
    check_id(check, id_value)?;
    if let Some(first) = seen.insert(id.clone(), check.line(id_value.span().start)) {
        let msg = format!("device {id:?}: duplicate id (first defined at line {first})");
        return Err(check.at(id_value, "id", msg));
    }
    let dev = format!("device {id:?}");
    let device_type = match &raw.device_type {
        None => {
            let msg = format!("{dev}: missing key \"type\"");
            return Err(check.error(start, Some("type"), msg));
        }
        Some(t) if t.get_ref().trim().is_empty() => {
            let msg = format!("{dev}: type must not be empty");
            return Err(check.at(t, "type", msg));
        }
        Some(t) => t.get_ref().clone(),
    };
    let policy = check
        .named(&raw.policy, "policy", &dev, KNOWN_POLICIES)?
        .unwrap_or(UpdatePolicy::Immediate);
    let version_scheme: crate::version::VersionScheme = check
        .named(
            &raw.version_scheme,
            "version_scheme",
            &dev,
            KNOWN_VERSION_SCHEMES,
        )?
        .unwrap_or_default();
    let group = match &raw.group {
        Some(g) => match crate::model::Release::group_name_problem(g.get_ref()) {
            Some(problem) => return Err(check.at(g, "group", format!("{dev}: {problem}"))),
            None => Some(g.get_ref().clone()),
        },
        None => None,
    };
    let lock = match &raw.lock {
        Some(l) => match crate::engine::lock::version_problem(version_scheme, l.get_ref()) {
            Some(e) => return Err(check.at(l, "lock", format!("{dev}: lock: {e}"))),
            None => Some(l.get_ref().clone()),
        },
        None => None,
    };
    let keys = DeviceKeys {
        check,
        dev: &dev,
        start,
        only_newer: raw.only_newer.as_ref(),
    };
    let handler = handler(&keys, &raw, section.rest)?;
    Ok(DeviceConfig {
        id,
        device_type,
        policy,
        version_scheme,
        only_newer: raw.only_newer.as_ref().is_none_or(|o| *o.get_ref()),
        group,
        lock,
        handler,
    })
}

/// Checks the characters and length of a device id.
fn check_id(check: &Checker<'_>, id: &Spanned<String>) -> Result<(), ConfigError> {
    let value = id.get_ref();
    let problem = if value.is_empty() {
        Some("must not be empty".to_string())
    } else if value.len() > MAX_ID_LEN {
        Some(format!("is longer than {MAX_ID_LEN} characters"))
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("may only contain A-Z, a-z, 0-9, '.', '_' and '-'".to_string())
    } else {
        None
    };
    match problem {
        Some(problem) => Err(check.at(id, "id", format!("device: id {value:?} {problem}"))),
        None => Ok(()),
    }
}

/// The device's handler, built from its own keys.
fn handler(
    keys: &DeviceKeys<'_>,
    raw: &RawDevice,
    rest: Table<'_>,
) -> Result<super::HandlerConfig, ConfigError> {
    let (check, dev) = (keys.check, keys.dev);
    let Some(handler) = &raw.handler else {
        let msg = format!(
            "{dev}: missing key \"handler\" (known: {})",
            handlers::known()
        );
        return Err(check.error(keys.start, Some("handler"), msg));
    };
    let name = handler.get_ref().as_str();
    let Some(entry) = handlers::find(name) else {
        let msg = format!(
            "{dev}: unknown handler {name:?} (known: {})",
            handlers::known()
        );
        return Err(check.at(handler, "handler", msg));
    };
    // Keys of other handlers are mistakes, not silently ignored settings.
    if let Some((key, at)) = rest.foreign_key(handlers::handler_keys(), &entry.owner) {
        let msg = format!("{dev}: key {key:?} does not apply to handler {name:?}");
        return Err(check.error(at, Some(key), msg));
    }
    (entry.build)(rest, keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check::parse_enum;
    use crate::version::VersionScheme;

    #[test]
    fn known_names_parse() {
        for name in KNOWN_POLICIES.split(", ") {
            assert!(parse_enum::<UpdatePolicy>(name).is_some(), "{name}");
        }
        for name in KNOWN_VERSION_SCHEMES.split(", ") {
            assert!(parse_enum::<VersionScheme>(name).is_some(), "{name}");
        }
        assert_eq!(parse_enum::<UpdatePolicy>("Immediate"), None);
    }

    #[test]
    fn handler_keys_are_those_of_the_handlers_structs_in_registry_order() {
        assert_eq!(
            handlers::handler_keys(),
            [
                "version_command",
                "executable_command",
                "transfer_command",
                "update_command",
                "command_timeout",
                "port",
                "baud",
                "flash_offset",
                "reset",
                "key",
                "ptype",
                "cloud_listen",
                "rom_listen",
                "stall_timeout",
                "connect_timeout",
                "protocol",
                "enter_command",
                "response_timeout",
                "retries",
                "region",
                "reset_command",
                "health_command",
                "health_timeout",
                "min_uptime",
                "reboot_command",
                "reboot_timeout",
                "os_release",
            ]
        );
    }
}
