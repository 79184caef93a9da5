//! `kind = "mcs"`: defaults, the device mapping, and every error with its line and
//! key.

use std::time::Duration;

use super::{parse, parse_err};
use crate::config::{McsConfig, McsDevice, SourceConfig};

const DEVICES: &str = "[[device]]\nid = \"gateway\"\ntype = \"gw\"\nhandler = \"command\"\n\
    update_command = [\"u\"]\n[[device]]\nid = \"esp-1\"\ntype = \"esp\"\nhandler = \"command\"\n\
    update_command = [\"u\"]\n";

fn mcs(text: &str) -> McsConfig {
    match parse(&format!("{DEVICES}{text}")).unwrap().source {
        SourceConfig::Mcs(m) => m,
        other => panic!("{other:?}"),
    }
}

#[test]
fn gateway_and_devices_with_defaults() {
    let m = mcs(
        "[source]\nkind = \"mcs\"\ndevice_id = \"DgW\"\ndevice_key = \"KgW\"\n\
                 [source.devices]\n\"esp-1\" = { device_id = \"DeSp\", device_key = \"KeSp\" }\n",
    );
    assert_eq!(m.base_url, "https://api.mediatek.com/mcs/v2");
    assert_eq!(
        m.devices,
        vec![
            McsDevice {
                agent_device: "gateway".into(),
                device_id: "DgW".into(),
                device_key: "KgW".into()
            },
            McsDevice {
                agent_device: "esp-1".into(),
                device_id: "DeSp".into(),
                device_key: "KeSp".into()
            },
        ]
    );
    assert_eq!(m.command_server, None);
    assert_eq!(m.heartbeat_interval, Duration::from_secs(60));
    assert_eq!(m.max_push_age, Duration::from_secs(600));
    assert_eq!(m.status_channel.as_deref(), Some("fota_status"));
    // The key never shows in Debug output.
    let shown = format!("{m:?}");
    assert!(!shown.contains("KgW") && !shown.contains("KeSp"), "{shown}");
}

#[test]
fn every_key_set() {
    let m = mcs(
        "[source]\nkind = \"mcs\"\nbase_url = \"https://127.0.0.1:8080/mcs/v2/\"\n\
                 device_id = \"D\"\ndevice_key = \"K\"\ngateway_device = \"esp-1\"\n\
                 command_server = \"cmd.example:443\"\nheartbeat_interval = \"30s\"\n\
                 max_push_age = \"2m\"\nstatus_channel = \"\"\nhttps_only = true\n",
    );
    assert_eq!(m.base_url, "https://127.0.0.1:8080/mcs/v2");
    assert_eq!(m.devices[0].agent_device, "esp-1");
    assert_eq!(m.command_server.as_deref(), Some("cmd.example:443"));
    assert_eq!(m.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(m.max_push_age, Duration::from_secs(120));
    assert_eq!(m.status_channel, None);
}

#[test]
fn errors_name_line_and_key() {
    // DEVICES has 10 lines; [source] is line 11.
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "[source]\nkind = \"mcs\"\n",
            11,
            "device_id",
            "source: kind \"mcs\" needs device_id and device_key",
        ),
        (
            "[source]\nkind = \"mcs\"\ndevice_id = \"D\"\n",
            13,
            "device_key",
            "source.device_id: needs device_key",
        ),
        (
            "[source]\nkind = \"mcs\"\ndevice_id = \"D\"\ndevice_key = \"K\"\ngateway_device = \"gw\"\n",
            15,
            "gateway_device",
            "source.gateway_device: no [[device]] with id \"gw\"",
        ),
        (
            "[source]\nkind = \"mcs\"\ndevice_id = \"D\"\ndevice_key = \"K,x\"\n",
            14,
            "device_key",
            "source.device_key: may only contain printable ASCII",
        ),
        (
            "[source]\nkind = \"mcs\"\n[source.devices]\n\"esp-2\" = { device_id = \"D\", device_key = \"K\" }\n",
            14,
            "esp-2",
            "source.devices.esp-2: no [[device]] with id \"esp-2\"",
        ),
        (
            "[source]\nkind = \"mcs\"\n[source.devices]\n\"esp-1\" = { device_id = \"D\" }\n",
            14,
            "device_key",
            "source.devices.esp-1: missing key \"device_key\"",
        ),
        (
            "[source]\nkind = \"mcs\"\ndevice_id = \"D\"\ndevice_key = \"K\"\n[source.devices]\n\
             \"esp-1\" = { device_id = \"D\", device_key = \"K2\" }\n",
            16,
            "esp-1",
            "source: MCS device_id \"D\" is bound to two devices",
        ),
    ];
    check_errors(cases);
}

#[test]
fn more_errors_name_line_and_key() {
    // DEVICES has 10 lines; [source] is line 11.
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "[source]\nkind = \"mcs\"\ndevice_id = \"D\"\ndevice_key = \"K\"\n[source.devices]\n\
             \"gateway\" = { device_id = \"E\", device_key = \"K2\" }\n",
            16,
            "gateway",
            "source: device \"gateway\" has two MCS identities",
        ),
        (
            "[source]\nkind = \"mcs\"\ndevice_id = \"D\"\ndevice_key = \"K\"\ncommand_server = \"host\"\n",
            15,
            "command_server",
            "source.command_server: expected host:port",
        ),
        (
            "[source]\nkind = \"mcs\"\ndevice_id = \"D\"\ndevice_key = \"K\"\nbase_url = \"ftp://x\"\n",
            15,
            "base_url",
            "source.base_url: \"ftp://x\" is not an http:// or https:// URL",
        ),
        (
            "[source]\nkind = \"mcs\"\ndevice_id = \"D\"\ndevice_key = \"K\"\nheartbeat_interval = \"0s\"\n",
            15,
            "heartbeat_interval",
            "source.heartbeat_interval: must not be zero",
        ),
        (
            "[source]\nkind = \"mcs\"\npath = \"/x\"\n",
            13,
            "path",
            "source: key \"path\" does not apply to kind \"mcs\"",
        ),
        (
            "[source]\nkind = \"directory\"\ndevice_id = \"D\"\n",
            13,
            "device_id",
            "source: key \"device_id\" does not apply to kind \"directory\"",
        ),
        (
            "[source]\nkind = \"mcs\"\n[source.devices]\n\"esp-1\" = { device_id = \"D\", key = \"K\" }\n",
            14,
            "key",
            "unknown field `key`",
        ),
    ];
    check_errors(cases);
}

/// Runs each error case of this file.
fn check_errors(cases: &[(&str, usize, &str, &str)]) {
    for (text, line, key, message) in cases {
        let err = parse_err(&format!("{DEVICES}{text}"));
        assert_eq!(err.line(), Some(*line), "{err}");
        assert_eq!(err.key(), Some(*key), "{err}");
        assert!(err.message().starts_with(message), "{err}");
        assert!(!err.to_string().contains("K2"), "{err}");
    }
}
