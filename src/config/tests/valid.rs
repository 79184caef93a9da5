use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{PATH, minimal_device, parse};
use crate::config::{
    AgentConfig, CommandConfig, Config, DeviceConfig, HandlerConfig, SourceConfig,
};
use crate::model::UpdatePolicy;
use crate::version::VersionScheme;

const FULL: &str = r#"
# Every key set.
[agent]
state_dir = "/var/lib/fota"
poll_interval = "1h 30m"
update_timeout = "45m"
confirm_window = "90s"
max_concurrent_updates = 2

[source]
kind = "directory"
path = "/srv/firmware"

[[device]]
id = "demo-1"
type = "demo-sensor"
handler = "command"
policy = "background"
version_scheme = "semver"
only_newer = false
version_command = ["/usr/lib/x/version.sh", "--id", "demo-1"]
executable_command = ["/usr/lib/x/ready.sh"]
transfer_command = ["/usr/lib/x/transfer.sh"]
update_command = ["/usr/lib/x/update.sh", ""]
command_timeout = "90s"

[[device]]
id = "esp_2.A"
type = "esp8266"
handler = "command"
update_command = ["sh", "-c", "flash"]
"#;

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn default_agent() -> AgentConfig {
    AgentConfig {
        state_dir: PathBuf::from("/var/lib/fota-agent"),
        poll_interval: Duration::from_secs(3600),
        update_timeout: Duration::from_secs(1800),
        confirm_window: Duration::from_secs(180),
        max_concurrent_updates: 1,
    }
}

fn command(device: &DeviceConfig) -> &CommandConfig {
    match &device.handler {
        HandlerConfig::Command(c) => c,
        other => panic!("expected the command handler, got {other:?}"),
    }
}

#[test]
fn full_config_parses_with_defaults_filled() {
    let config = parse(FULL).unwrap();
    let expected = Config {
        path: PathBuf::from(PATH),
        agent: AgentConfig {
            state_dir: PathBuf::from("/var/lib/fota"),
            poll_interval: Duration::from_secs(90 * 60),
            update_timeout: Duration::from_secs(45 * 60),
            confirm_window: Duration::from_secs(90),
            max_concurrent_updates: 2,
        },
        source: SourceConfig::Directory {
            path: PathBuf::from("/srv/firmware"),
        },
        download: crate::download::DownloadConfig {
            https_only: true,
            ..Default::default()
        },
        status: crate::config::StatusConfig::default(),
        trust: crate::trust::TrustPolicy::default(),
        devices: vec![
            DeviceConfig {
                id: "demo-1".into(),
                device_type: "demo-sensor".into(),
                policy: UpdatePolicy::Background,
                version_scheme: VersionScheme::Semver,
                only_newer: false,
                group: None,
                lock: None,
                handler: HandlerConfig::Command(CommandConfig {
                    version_command: Some(argv(&["/usr/lib/x/version.sh", "--id", "demo-1"])),
                    executable_command: Some(argv(&["/usr/lib/x/ready.sh"])),
                    transfer_command: Some(argv(&["/usr/lib/x/transfer.sh"])),
                    update_command: argv(&["/usr/lib/x/update.sh", ""]),
                    command_timeout: Duration::from_secs(90),
                }),
            },
            minimal_device("esp_2.A", "esp8266", &["sh", "-c", "flash"]),
        ],
        literal_secrets: vec![],
    };
    assert_eq!(config, expected);
    assert_eq!(config.devices[0].handler.name(), "command");
}

#[test]
fn empty_files_give_defaults_and_no_devices() {
    let expected = Config {
        path: PathBuf::from(PATH),
        agent: default_agent(),
        source: SourceConfig::Directory {
            path: PathBuf::from("/var/lib/fota-agent/firmware"),
        },
        download: crate::download::DownloadConfig {
            https_only: true,
            ..Default::default()
        },
        status: crate::config::StatusConfig::default(),
        trust: crate::trust::TrustPolicy::default(),
        devices: vec![],
        literal_secrets: vec![],
    };
    for text in [
        "",
        "\n\n",
        "# nothing\n",
        "[agent]\n",
        "[agent]\n[source]\nkind = \"directory\"\n",
    ] {
        assert_eq!(parse(text).unwrap(), expected, "{text:?}");
    }
}

#[test]
fn source_defaults_to_firmware_below_the_state_dir() {
    for text in [
        "[agent]\nstate_dir = \"/data/fota\"\n",
        "[agent]\nstate_dir = \"/data/fota\"\n[source]\nkind = \"directory\"\n",
    ] {
        let config = parse(text).unwrap();
        assert_eq!(
            config.source,
            SourceConfig::Directory {
                path: PathBuf::from("/data/fota/firmware")
            },
            "{text:?}"
        );
    }
}

#[test]
fn every_policy_and_version_scheme_name_is_accepted() {
    let cases = [
        ("policy", "immediate"),
        ("policy", "background"),
        ("version_scheme", "esh"),
        ("version_scheme", "espressif"),
        ("version_scheme", "particle"),
        ("version_scheme", "semver"),
    ];
    for (key, value) in cases {
        let text = format!(
            "[[device]]\nid = \"d\"\ntype = \"t\"\nhandler = \"command\"\n\
             update_command = [\"u\"]\n{key} = \"{value}\"\n"
        );
        let device = &parse(&text).unwrap().devices[0];
        let got = match key {
            "policy" => serde_json::to_value(device.policy).unwrap(),
            _ => serde_json::to_value(device.version_scheme).unwrap(),
        };
        assert_eq!(got, value, "{key} = {value}");
    }
}

#[test]
fn durations_in_humantime_forms() {
    let cases = [
        ("90s", 90),
        ("30m", 1800),
        ("1h 30m", 5400),
        ("2h", 7200),
        ("1day", 86400),
    ];
    for (text, secs) in cases {
        let config = parse(&format!("[agent]\npoll_interval = \"{text}\"\n")).unwrap();
        assert_eq!(
            config.agent.poll_interval,
            Duration::from_secs(secs),
            "{text}"
        );
    }
}

#[test]
fn devices_may_be_written_as_inline_tables() {
    let text = "device = [{ id = \"a\", type = \"t\", handler = \"command\", \
                update_command = [\"u\"] }]\n";
    let config = parse(text).unwrap();
    assert_eq!(config.devices, vec![minimal_device("a", "t", &["u"])]);
}

const RELATIVE: &str = r#"
[agent]
state_dir = "state"

[source]
kind = "directory"
path = "../firmware"

[[device]]
id = "d"
type = "t"
handler = "command"
version_command = ["bin/version.sh", "./not/resolved"]
executable_command = ["sh", "-c", "exit 0"]
transfer_command = ["/usr/bin/transfer", "x"]
update_command = ["./bin/update.sh", "bin/arg"]
"#;

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let config = Config::parse(RELATIVE, Path::new("/opt/demo/config.toml")).unwrap();
    assert_eq!(config.agent.state_dir, PathBuf::from("/opt/demo/state"));
    assert_eq!(
        config.source,
        SourceConfig::Directory {
            path: PathBuf::from("/opt/demo/../firmware")
        }
    );
    let cmd = command(&config.devices[0]);
    let version = argv(&["/opt/demo/bin/version.sh", "./not/resolved"]);
    assert_eq!(cmd.version_command, Some(version));
    assert_eq!(cmd.executable_command, Some(argv(&["sh", "-c", "exit 0"])));
    assert_eq!(
        cmd.transfer_command,
        Some(argv(&["/usr/bin/transfer", "x"]))
    );
    assert_eq!(
        cmd.update_command,
        argv(&["/opt/demo/./bin/update.sh", "bin/arg"])
    );
}

#[test]
fn relative_state_dir_also_moves_the_default_source() {
    let text = "[agent]\nstate_dir = \"state\"\n";
    let config = Config::parse(text, Path::new("demo/config.toml")).unwrap();
    assert_eq!(config.agent.state_dir, PathBuf::from("demo/state"));
    assert_eq!(
        config.source,
        SourceConfig::Directory {
            path: PathBuf::from("demo/state/firmware")
        }
    );
}

#[test]
fn bare_file_name_leaves_relative_paths_as_written() {
    let config = Config::parse(RELATIVE, Path::new("config.toml")).unwrap();
    assert_eq!(config.path, PathBuf::from("config.toml"));
    assert_eq!(config.agent.state_dir, PathBuf::from("state"));
    let cmd = command(&config.devices[0]);
    assert_eq!(cmd.update_command, argv(&["./bin/update.sh", "bin/arg"]));
}

#[test]
fn load_reads_the_file_and_resolves_against_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, RELATIVE).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.path, path);
    assert_eq!(config.agent.state_dir, dir.path().join("state"));
    let update = &command(&config.devices[0]).update_command[0];
    assert_eq!(Path::new(update), dir.path().join("./bin/update.sh"));
}

#[test]
fn load_of_a_missing_file_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = Config::load(&path).unwrap_err();
    assert_eq!(err.line(), None);
    assert_eq!(err.key(), None);
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{}: cannot read: ", path.display())),
        "{shown}"
    );
    assert!(!shown.contains('\n'), "{shown}");
}

#[test]
fn never_panics_on_truncated_or_mangled_input() {
    let replacements = [
        "", "\n", "\"", "[", "]", "=", "0", "-1", "x", "ä", "\0", "'''",
    ];
    for (i, _) in FULL.char_indices() {
        let _ = parse(&FULL[..i]);
        for r in replacements {
            let mangled = format!("{}{r}{}", &FULL[..i], &FULL[i + 1..]);
            if let Err(e) = parse(&mangled) {
                let shown = e.to_string();
                assert!(!shown.contains('\n'), "multi-line error: {shown:?}");
                assert!(shown.starts_with(PATH), "{shown}");
            }
        }
    }
}

#[test]
fn serial_handlers_parse_with_defaults() {
    let config = parse(
        "[[device]]\nid = \"esp\"\ntype = \"light\"\nhandler = \"esp8266\"\nport = \"/dev/ttyUSB0\"\n\
         flash_offset = 0x1000\nreset = \"none\"\n\
         [[device]]\nid = \"mcu\"\ntype = \"stm\"\nhandler = \"xmodem\"\nport = \"/dev/ttyS1\"\n\
         baud = 57600\nprotocol = \"ymodem\"\nenter_command = \"boot\\r\"\nretries = 3\n",
    )
    .unwrap();
    let HandlerConfig::Esp8266(esp) = &config.devices[0].handler else {
        panic!("{:?}", config.devices[0].handler);
    };
    assert_eq!(esp.serial.port, PathBuf::from("/dev/ttyUSB0"));
    assert_eq!(esp.serial.baud, 115_200);
    assert_eq!(esp.flash_offset, 0x1000);
    assert_eq!(esp.reset, crate::config::EspReset::None);
    let HandlerConfig::Xmodem(x) = &config.devices[1].handler else {
        panic!("{:?}", config.devices[1].handler);
    };
    assert_eq!(x.serial.baud, 57_600);
    assert_eq!(x.protocol, crate::config::XmodemProtocol::Ymodem);
    assert_eq!(x.enter_command.as_deref(), Some("boot\r"));
    assert_eq!(x.retries, 3);
    assert_eq!(x.response_timeout, Duration::from_secs(10));
}

#[test]
fn download_keys_of_source() {
    let config = parse(
        "[source]\nkind = \"directory\"\npath = \"fw\"\nca_bundle = \"ca.pem\"\n\
         client_cert = \"/etc/c.pem\"\nclient_key = \"/etc/k.pem\"\nhttps_only = true\n\
         connect_timeout = \"5s\"\nstall_timeout = \"20s\"\ndownload_attempts = 3\n\
         max_image_size = 1048576\n",
    )
    .unwrap();
    let d = &config.download;
    assert_eq!(
        d.ca_bundle,
        Some(PathBuf::from(PATH).parent().unwrap().join("ca.pem"))
    );
    assert_eq!(d.client_cert, Some(PathBuf::from("/etc/c.pem")));
    assert_eq!(d.client_key, Some(PathBuf::from("/etc/k.pem")));
    assert!(d.https_only);
    assert_eq!(d.connect_timeout, Duration::from_secs(5));
    assert_eq!(d.stall_timeout, Duration::from_secs(20));
    assert_eq!(d.max_attempts, 3);
    assert_eq!(d.max_image_size, Some(1 << 20));
    let err = parse("[source]\nkind = \"directory\"\n\nclient_key = \"k\"\n").unwrap_err();
    assert_eq!((err.line(), err.key()), (Some(4), Some("client_key")));
    let err = parse("[source]\nkind = \"directory\"\nmax_image_size = -1\n").unwrap_err();
    assert_eq!((err.line(), err.key()), (Some(3), Some("max_image_size")));
}

#[test]
fn mt7681_parses_with_defaults() {
    let config = parse(
        "[[device]]\nid = \"wifi\"\ntype = \"mt7681\"\nhandler = \"mt7681\"\n\
         port = \"/dev/ttyUSB1\"\nversion_command = [\"./ver.sh\"]\n\
         [[device]]\nid = \"wifi2\"\ntype = \"mt7681\"\nhandler = \"mt7681\"\n\
         port = \"/dev/ttyUSB2\"\nbaud = 57600\nregion = \"ap\"\nretries = 3\n\
         response_timeout = \"4s\"\nonly_newer = true\nversion_command = [\"v\"]\n",
    )
    .unwrap();
    let HandlerConfig::Mt7681(m) = &config.devices[0].handler else {
        panic!("{:?}", config.devices[0].handler);
    };
    assert_eq!(m.serial.port, PathBuf::from("/dev/ttyUSB1"));
    assert_eq!(m.serial.baud, 115_200);
    assert_eq!(m.region, crate::config::Mt7681Region::Sta);
    assert_eq!(m.retries, 10);
    assert_eq!(m.response_timeout, Duration::from_secs(10));
    assert_eq!(m.command_timeout, Duration::from_secs(60));
    assert!(
        m.version_command[0].ends_with("/ver.sh"),
        "{:?}",
        m.version_command
    );
    assert!(config.devices[0].only_newer);
    let HandlerConfig::Mt7681(m) = &config.devices[1].handler else {
        panic!("{:?}", config.devices[1].handler);
    };
    assert_eq!(m.serial.baud, 57_600);
    assert_eq!(m.region, crate::config::Mt7681Region::Ap);
    assert_eq!(m.retries, 3);
    assert_eq!(m.response_timeout, Duration::from_secs(4));
    assert_eq!(config.devices[1].handler.name(), "mt7681");
}

#[test]
fn status_table_defaults_and_values() {
    let config = parse("").unwrap();
    assert_eq!(
        config.status.listen,
        Some("127.0.0.1:8470".parse().unwrap())
    );
    assert_eq!((config.status.socket, config.status.token), (None, None));
    let config = parse(
        "[status]\nlisten = \"[::1]:9000\"\nsocket = \"run/status.sock\"\n\
         token = \"0123456789abcdef-xyz\"\n",
    )
    .unwrap();
    assert_eq!(config.status.listen, Some("[::1]:9000".parse().unwrap()));
    assert_eq!(
        config.status.socket,
        Some(PathBuf::from("/etc/fota-agent/run/status.sock"))
    );
    assert_eq!(config.status.token.as_deref(), Some("0123456789abcdef-xyz"));
    let off = parse("[status]\nlisten = \"off\"\n").unwrap();
    assert_eq!(off.status.listen, None);
}

#[test]
fn hawkbit_source_with_defaults_and_mapping() {
    use crate::config::{ChunkSelector, HawkbitAuth, HawkbitConfig, Secret};
    let c = parse(concat!(
        "[source]\nkind = \"hawkbit\"\nurl = \"https://hb.example.com/\"\n",
        "target_token = \"s3cret\"\nca_bundle = \"/etc/ca.pem\"\n",
        "chunks = { esp-1 = \"part:os\", gw = \"name:gateway-image\" }\n\n",
        "[[device]]\nid = \"esp-1\"\ntype = \"t\"\nhandler = \"command\"\nupdate_command = [\"u\"]\n",
        "[[device]]\nid = \"gw\"\ntype = \"t\"\nhandler = \"command\"\nupdate_command = [\"u\"]\n",
    ))
    .unwrap();
    assert_eq!(
        c.source,
        SourceConfig::Hawkbit(HawkbitConfig {
            url: "https://hb.example.com".into(),
            tenant: "DEFAULT".into(),
            controller_id: None,
            auth: HawkbitAuth::TargetToken(Secret::new("s3cret")),
            min_poll_interval: Duration::from_secs(30),
            startup_spread: Duration::from_secs(60),
            devices: vec![
                ("esp-1".into(), ChunkSelector::Part("os".into())),
                ("gw".into(), ChunkSelector::Name("gateway-image".into())),
            ],
        })
    );
    assert_eq!(c.download.ca_bundle, Some("/etc/ca.pem".into()));
    assert!(
        !format!("{c:?}").contains("s3cret"),
        "token in Debug output"
    );

    let c = parse(concat!(
        "[source]\nkind = \"hawkbit\"\nurl = \"https://h:8080\"\ntenant = \"T1\"\n",
        "controller_id = \"gw-7\"\ngateway_token = \"g\"\nmin_poll_interval = \"5m\"\n",
    ))
    .unwrap();
    let SourceConfig::Hawkbit(h) = c.source else {
        panic!("not hawkbit")
    };
    assert_eq!(h.auth.header().as_deref(), Some("GatewayToken g"));
    assert_eq!(h.controller_id.as_deref(), Some("gw-7"));
    assert_eq!(h.min_poll_interval, Duration::from_secs(300));
}
