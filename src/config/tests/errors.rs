use super::{PATH, parse_err};

/// A config that should fail: where, on which key, saying what. A `message`
/// ending in `…` is a prefix of the expected message; otherwise it is exact.
struct Case {
    name: &'static str,
    text: &'static str,
    line: usize,
    key: Option<&'static str>,
    message: &'static str,
}

fn check(cases: &[Case]) {
    for case in cases {
        let err = parse_err(case.text);
        let shown = err.to_string();
        let name = case.name;
        assert_eq!(err.line(), Some(case.line), "{name}: line of {shown}");
        assert_eq!(err.key(), case.key, "{name}: key of {shown}");
        assert!(!shown.contains('\n'), "{name}: multi-line {shown:?}");
        let prefix = format!("{PATH}:{}: ", case.line);
        assert!(shown.starts_with(&prefix), "{name}: {shown}");
        assert_eq!(shown[prefix.len()..], err.message(), "{name}");
        match case.message.strip_suffix('…') {
            Some(start) => assert!(err.message().starts_with(start), "{name}: {shown}"),
            None => assert_eq!(err.message(), case.message, "{name}"),
        }
    }
}

/// A valid device (5 lines) to put before the one under test.
const OTHER: &str =
    "[[device]]\nid = \"other\"\ntype = \"t\"\nhandler = \"command\"\nupdate_command = [\"u\"]\n";

#[test]
fn unknown_keys_name_the_key_and_its_line() {
    check(&[
        Case {
            name: "top level",
            text: "# comment\n\ncolour = \"red\"\n[agent]\n",
            line: 3,
            key: Some("colour"),
            message: "unknown field `colour`, expected one of `agent`, `source`, `status`, `trust`, `device`",
        },
        Case {
            name: "agent",
            text: "[agent]\npoll_interval = \"1h\"\n\ncolour = 1\n",
            line: 4,
            key: Some("colour"),
            message: "unknown field `colour`, expected one of `state_dir`, …",
        },
        Case {
            name: "agent, dotted",
            text: "agent.poll_interval = \"1h\"\nagent.colour = 1\n",
            line: 2,
            key: Some("colour"),
            message: "unknown field `colour`, expected one of `state_dir`, …",
        },
        Case {
            name: "source",
            text: "[source]\nkind = \"directory\"\ncolour = \"red\"\n",
            line: 3,
            key: Some("colour"),
            message: "unknown field `colour`, expected one of `kind`, `path`, …",
        },
        Case {
            name: "second device",
            text: concat!(
                "[[device]]\nid = \"other\"\ntype = \"t\"\nhandler = \"command\"\n",
                "update_command = [\"u\"]\n\n[[device]]\nid = \"d\"\ncolour = \"red\"\n"
            ),
            line: 9,
            key: Some("colour"),
            message: "unknown field `colour`, expected one of `id`, `type`, …",
        },
        Case {
            name: "quoted key",
            text: "[agent]\n\"colour\" = 1\n",
            line: 2,
            key: Some("colour"),
            message: "unknown field `colour`, …",
        },
        Case {
            name: "key with a line break",
            text: "\n\"a\\nb\" = 1\n",
            line: 2,
            key: Some("a\\nb"),
            message: "unknown field `a\\nb`, …",
        },
    ]);
}

#[test]
fn toml_syntax_and_type_errors_carry_their_line() {
    check(&[
        Case {
            name: "unclosed table header",
            text: "# x\n[agent\n",
            line: 2,
            key: None,
            message: "unclosed table, expected `]`",
        },
        Case {
            name: "unterminated string",
            text: "[agent]\nstate_dir = \"/x\"\npoll_interval = \"1h\n",
            line: 3,
            key: None,
            message: "…",
        },
        Case {
            name: "duplicate key",
            text: "[agent]\npoll_interval = \"1h\"\npoll_interval = \"2h\"\n",
            line: 3,
            key: None,
            message: "duplicate key",
        },
        Case {
            name: "wrong type",
            text: "[agent]\n\nmax_concurrent_updates = \"2\"\n",
            line: 3,
            key: None,
            message: "invalid type: string \"2\", expected i64",
        },
        Case {
            name: "wrong type in argv",
            text: "[[device]]\nid = \"d\"\nupdate_command = [\"u\", 1]\n",
            line: 3,
            key: None,
            message: "invalid type: integer `1`, expected a string",
        },
        Case {
            name: "device is not a table",
            text: "\ndevice = 1\n",
            line: 2,
            key: None,
            message: "invalid type: integer `1`, expected a sequence",
        },
    ]);
}

#[test]
fn agent_values_are_checked() {
    check(&[
        Case {
            name: "bad duration",
            text: "[agent]\npoll_interval = \"1h\"\nupdate_timeout = \"30 minutez\"\n",
            line: 3,
            key: Some("update_timeout"),
            message: "agent.update_timeout: invalid duration \"30 minutez\": …",
        },
        Case {
            name: "zero update_timeout",
            text: "[agent]\nupdate_timeout = \"0s\"\n",
            line: 2,
            key: Some("update_timeout"),
            message: "agent.update_timeout: must not be zero",
        },
        Case {
            name: "zero poll_interval",
            text: "\n[agent]\npoll_interval = \"0m\"\n",
            line: 3,
            key: Some("poll_interval"),
            message: "agent.poll_interval: must not be zero",
        },
        Case {
            name: "empty duration",
            text: "[agent]\npoll_interval = \"\"\n",
            line: 2,
            key: Some("poll_interval"),
            message: "agent.poll_interval: invalid duration \"\": …",
        },
        Case {
            name: "absurd duration",
            text: "[agent]\npoll_interval = \"1000years\"\n",
            line: 2,
            key: Some("poll_interval"),
            message: "agent.poll_interval: duration \"1000years\" is too long (at most 10years)",
        },
        Case {
            name: "zero max_concurrent_updates",
            text: "[agent]\nmax_concurrent_updates = 0\n",
            line: 2,
            key: Some("max_concurrent_updates"),
            message: "agent.max_concurrent_updates: must be between 1 and 1024, got 0",
        },
        Case {
            name: "negative max_concurrent_updates",
            text: "[agent]\n\n\nmax_concurrent_updates = -1\n",
            line: 4,
            key: Some("max_concurrent_updates"),
            message: "agent.max_concurrent_updates: must be between 1 and 1024, got -1",
        },
        Case {
            name: "huge max_concurrent_updates",
            text: "[agent]\nmax_concurrent_updates = 9223372036854775807\n",
            line: 2,
            key: Some("max_concurrent_updates"),
            message: "agent.max_concurrent_updates: must be between 1 and 1024, \
                      got 9223372036854775807",
        },
        Case {
            name: "empty state_dir",
            text: "[agent]\nstate_dir = \"\"\n",
            line: 2,
            key: Some("state_dir"),
            message: "agent.state_dir: must not be empty",
        },
    ]);
}

#[test]
fn source_is_checked() {
    check(&[
        Case {
            name: "unknown kind",
            text: "[source]\nkind = \"http\"\n",
            line: 2,
            key: Some("kind"),
            message: "source: unknown kind \"http\" (known: directory, …",
        },
        Case {
            name: "missing kind",
            text: "[agent]\n\n[source]\npath = \"/x\"\n",
            line: 3,
            key: Some("kind"),
            message: "source: missing key \"kind\" (known: directory, …",
        },
        Case {
            name: "empty path",
            text: "[source]\nkind = \"directory\"\npath = \"\"\n",
            line: 3,
            key: Some("path"),
            message: "source.path: must not be empty",
        },
    ]);
}

#[test]
fn device_ids_are_checked() {
    check(&[
        Case {
            name: "duplicate id",
            text: concat!(
                "[[device]]\nid = \"other\"\ntype = \"t\"\nhandler = \"command\"\n",
                "update_command = [\"u\"]\n\n[[device]]\ntype = \"t\"\nid = \"other\"\n"
            ),
            line: 9,
            key: Some("id"),
            message: "device \"other\": duplicate id (first defined at line 2)",
        },
        Case {
            name: "space in id",
            text: "[[device]]\nid = \"a b\"\n",
            line: 2,
            key: Some("id"),
            message: "device: id \"a b\" may only contain A-Z, a-z, 0-9, '.', '_' and '-'",
        },
        Case {
            name: "slash in id",
            text: "[[device]]\nid = \"../etc\"\n",
            line: 2,
            key: Some("id"),
            message: "device: id \"../etc\" may only contain A-Z, a-z, 0-9, '.', '_' and '-'",
        },
        Case {
            name: "non-ASCII id",
            text: "[[device]]\nid = \"gerät\"\n",
            line: 2,
            key: Some("id"),
            message: "device: id \"gerät\" may only contain A-Z, a-z, 0-9, '.', '_' and '-'",
        },
        Case {
            name: "newline in id",
            text: "[[device]]\nid = \"a\\nb\"\n",
            line: 2,
            key: Some("id"),
            message: "device: id \"a\\nb\" may only contain A-Z, a-z, 0-9, '.', '_' and '-'",
        },
        Case {
            name: "empty id",
            text: "[[device]]\nid = \"\"\n",
            line: 2,
            key: Some("id"),
            message: "device: id \"\" must not be empty",
        },
        Case {
            name: "missing id",
            text: "\n[[device]]\ntype = \"t\"\n",
            line: 2,
            key: Some("id"),
            message: "device: missing key \"id\"",
        },
    ]);
    let long = format!("[[device]]\nid = \"{}\"\n", "a".repeat(129));
    let err = parse_err(&long);
    assert_eq!((err.line(), err.key()), (Some(2), Some("id")));
    assert!(
        err.message().ends_with("is longer than 128 characters"),
        "{err}"
    );
}

#[test]
fn device_keys_are_checked() {
    check(&[
        Case {
            name: "unknown handler",
            text: concat!(
                "[[device]]\nid = \"other\"\ntype = \"t\"\nhandler = \"command\"\n",
                "update_command = [\"u\"]\n\n[[device]]\nid = \"esp-1\"\ntype = \"esp\"\n",
                "\nhandler = \"esp8267\"\n"
            ),
            line: 11,
            key: Some("handler"),
            message: "device \"esp-1\": unknown handler \"esp8267\" (known: command, esp8266, esp8266-wifi, mt7681, rauc, xmodem)",
        },
        Case {
            name: "missing handler",
            text: "[[device]]\nid = \"d\"\ntype = \"t\"\n",
            line: 1,
            key: Some("handler"),
            message: "device \"d\": missing key \"handler\" (known: command, esp8266, esp8266-wifi, mt7681, rauc, xmodem)",
        },
        Case {
            name: "missing type",
            text: "\n\n[[device]]\nid = \"d\"\nhandler = \"command\"\n",
            line: 3,
            key: Some("type"),
            message: "device \"d\": missing key \"type\"",
        },
        Case {
            name: "blank type",
            text: "[[device]]\nid = \"d\"\ntype = \" \"\n",
            line: 3,
            key: Some("type"),
            message: "device \"d\": type must not be empty",
        },
        Case {
            name: "bad policy",
            text: "[[device]]\nid = \"d\"\ntype = \"t\"\npolicy = \"sometimes\"\n",
            line: 4,
            key: Some("policy"),
            message: "device \"d\": unknown policy \"sometimes\" (known: immediate, background)",
        },
        Case {
            name: "capitalised policy",
            text: "[[device]]\nid = \"d\"\ntype = \"t\"\npolicy = \"Immediate\"\n",
            line: 4,
            key: Some("policy"),
            message: "device \"d\": unknown policy \"Immediate\" (known: immediate, background)",
        },
    ]);
}

#[test]
fn command_handler_keys_are_checked() {
    check(&[
        Case {
            name: "bad version_scheme",
            text: "[[device]]\nid = \"d\"\ntype = \"t\"\n\nversion_scheme = \"calver\"\n",
            line: 5,
            key: Some("version_scheme"),
            message: "device \"d\": unknown version_scheme \"calver\" \
                      (known: esh, espressif, particle, semver)",
        },
        Case {
            name: "bad group",
            text: "[[device]]\nid = \"d\"\ntype = \"t\"\ngroup = \"beta testers\"\n",
            line: 4,
            key: Some("group"),
            message: "device \"d\": group name \"beta testers\" may only contain …",
        },
        Case {
            name: "lock not a version of the scheme",
            text: "[[device]]\nid = \"d\"\ntype = \"t\"\nversion_scheme = \"particle\"\n\nlock = \"7.1\"\n",
            line: 6,
            key: Some("lock"),
            message: "device \"d\": lock: \"7.1\" is not a valid particle version…",
        },
        Case {
            name: "missing update_command",
            text: concat!(
                "[[device]]\nid = \"other\"\ntype = \"t\"\nhandler = \"command\"\n",
                "update_command = [\"u\"]\n\n[[device]]\nid = \"d\"\ntype = \"t\"\n",
                "handler = \"command\"\nversion_command = [\"v\"]\n"
            ),
            line: 7,
            key: Some("update_command"),
            message: "device \"d\": missing key \"update_command\" (required by handler \"command\")",
        },
        Case {
            name: "empty update_command",
            text: "[[device]]\nid = \"d\"\ntype = \"t\"\nhandler = \"command\"\nupdate_command = []\n",
            line: 5,
            key: Some("update_command"),
            message: "device \"d\": update_command: must not be empty",
        },
        Case {
            name: "empty program",
            text: concat!(
                "[[device]]\nid = \"d\"\ntype = \"t\"\nhandler = \"command\"\n",
                "update_command = [\"u\"]\nversion_command = [\"\", \"x\"]\n"
            ),
            line: 6,
            key: Some("version_command"),
            message: "device \"d\": version_command: the program (first element) must not be empty",
        },
        Case {
            name: "bad command_timeout",
            text: concat!(
                "[[device]]\nid = \"d\"\ntype = \"t\"\nhandler = \"command\"\n",
                "update_command = [\"u\"]\ncommand_timeout = \"soon\"\n"
            ),
            line: 6,
            key: Some("command_timeout"),
            message: "device \"d\": command_timeout: invalid duration \"soon\": …",
        },
        Case {
            name: "zero command_timeout",
            text: concat!(
                "[[device]]\nid = \"d\"\ntype = \"t\"\nhandler = \"command\"\n",
                "update_command = [\"u\"]\ncommand_timeout = \"0s\"\n"
            ),
            line: 6,
            key: Some("command_timeout"),
            message: "device \"d\": command_timeout: must not be zero",
        },
    ]);
}

#[test]
fn the_first_error_wins_and_later_devices_are_unaffected() {
    let text = format!("{OTHER}\n[[device]]\nid = \"bad id\"\n\n[[device]]\nid = \"\"\n");
    let err = parse_err(&text);
    assert_eq!((err.line(), err.key()), (Some(8), Some("id")));
}

#[test]
fn serial_handler_errors_name_key_and_line() {
    let cases = [
        (
            "[[device]]\nid = \"e\"\ntype = \"t\"\nhandler = \"esp8266\"\n",
            1,
            "port",
        ),
        (
            "[[device]]\nid = \"e\"\ntype = \"t\"\nhandler = \"esp8266\"\nport = \"/dev/x\"\nflash_offset = 0x1234\n",
            6,
            "flash_offset",
        ),
        (
            "[[device]]\nid = \"e\"\ntype = \"t\"\nhandler = \"esp8266\"\nport = \"/dev/x\"\nreset = \"usb\"\n",
            6,
            "reset",
        ),
        (
            "[[device]]\nid = \"e\"\ntype = \"t\"\nhandler = \"xmodem\"\nport = \"/dev/x\"\nbaud = 12\n",
            6,
            "baud",
        ),
        (
            "[[device]]\nid = \"e\"\ntype = \"t\"\nhandler = \"xmodem\"\nport = \"/dev/x\"\nprotocol = \"zmodem\"\n",
            6,
            "protocol",
        ),
        (
            "[[device]]\nid = \"e\"\ntype = \"t\"\nhandler = \"xmodem\"\nport = \"/dev/x\"\nreset = \"none\"\n",
            6,
            "reset",
        ),
        (
            "[[device]]\nid = \"e\"\ntype = \"t\"\nhandler = \"command\"\nupdate_command = [\"x\"]\nport = \"/dev/x\"\n",
            6,
            "port",
        ),
    ];
    for (text, line, key) in cases {
        let err = crate::config::Config::parse(text, std::path::Path::new("c.toml")).unwrap_err();
        assert_eq!(err.line(), Some(line), "{err}");
        assert_eq!(err.key(), Some(key), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("c.toml:{line}: device \"e\"")),
            "{err}"
        );
    }
}

#[test]
fn mt7681_keys_are_checked() {
    let base = "[[device]]\nid = \"e\"\ntype = \"t\"\nhandler = \"mt7681\"\nport = \"/dev/x\"\n";
    let cases = [
        (
            format!("{base}version_command = [\"v\"]\nonly_newer = false\n"),
            7,
            "only_newer",
            "only_newer = false is not allowed for handler \"mt7681\"",
        ),
        (
            base.to_string(),
            1,
            "version_command",
            "missing key \"version_command\" (required by handler \"mt7681\"",
        ),
        (
            format!("{base}version_command = [\"v\"]\nregion = \"bootrom\"\n"),
            7,
            "region",
            "unknown region \"bootrom\" (known: loader, recovery, eeprom, sta, sta-xip, ap, ap-xip)",
        ),
        (
            format!("{base}version_command = [\"v\"]\nprotocol = \"ymodem\"\n"),
            7,
            "protocol",
            "key \"protocol\" does not apply to handler \"mt7681\"",
        ),
        (
            format!("{base}version_command = [\"v\"]\nretries = 0\n"),
            7,
            "retries",
            "retries must be between 1 and 100, got 0",
        ),
        (
            "[[device]]\nid = \"e\"\ntype = \"t\"\nhandler = \"mt7681\"\nversion_command = [\"v\"]\n"
                .to_string(),
            1,
            "port",
            "missing key \"port\" (required by handler \"mt7681\")",
        ),
        (
            "[[device]]\nid = \"e\"\ntype = \"t\"\nhandler = \"xmodem\"\nport = \"/dev/x\"\nregion = \"sta\"\n"
                .to_string(),
            6,
            "region",
            "key \"region\" does not apply to handler \"xmodem\"",
        ),
    ];
    for (text, line, key, message) in cases {
        let err = crate::config::Config::parse(&text, std::path::Path::new("c.toml")).unwrap_err();
        assert_eq!(err.line(), Some(line), "{err}");
        assert_eq!(err.key(), Some(key), "{err}");
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("c.toml:{line}: device \"e\": {message}")),
            "{shown}"
        );
    }
}

#[test]
fn status_table_errors_name_key_and_line() {
    check(&[
        Case {
            name: "listen without port",
            text: "[status]\n\nlisten = \"127.0.0.1\"\n",
            line: 3,
            key: Some("listen"),
            message: "status.listen: expected an address with a port such as \"127.0.0.1:8470\" or \"off\", got \"127.0.0.1\"",
        },
        Case {
            name: "short token",
            text: "[status]\ntoken = \"secret\"\n",
            line: 2,
            key: Some("token"),
            message: "status.token: must be at least 16 printable ASCII characters without spaces",
        },
        Case {
            name: "token with a space",
            text: "[status]\ntoken = \"0123456789 abcdef\"\n",
            line: 2,
            key: Some("token"),
            message: "status.token: must be at least 16 …",
        },
        Case {
            name: "empty socket",
            text: "[status]\nsocket = \"\"\n",
            line: 2,
            key: Some("socket"),
            message: "status.socket: must not be empty",
        },
        Case {
            name: "unknown key",
            text: "[status]\nport = 8470\n",
            line: 2,
            key: Some("port"),
            message: "unknown field `port`, expected one of `listen`, `socket`, `token`, `allow_remote`, `max_connections`, `header_timeout`",
        },
    ]);
}

#[test]
fn hawkbit_source_is_checked() {
    const H: &str = "[source]\nkind = \"hawkbit\"\n";
    check(&[
        Case {
            name: "key of another kind",
            text: "[source]\nkind = \"directory\"\nurl = \"https://x\"\n",
            line: 3,
            key: Some("url"),
            message: "source: key \"url\" does not apply to kind \"directory\"",
        },
        Case {
            name: "path with hawkbit",
            text: "[source]\nkind = \"hawkbit\"\nurl = \"https://x\"\npath = \"/x\"\n",
            line: 4,
            key: Some("path"),
            message: "source: key \"path\" does not apply to kind \"hawkbit\"",
        },
        Case {
            name: "missing url",
            text: H,
            line: 1,
            key: Some("url"),
            message: "source: missing key \"url\" (required by kind \"hawkbit\")",
        },
        Case {
            name: "bad url",
            text: "[source]\nkind = \"hawkbit\"\nurl = \"ftp://x\"\n",
            line: 3,
            key: Some("url"),
            message: "source.url: \"ftp://x\" is not an http:// or https:// URL",
        },
        Case {
            name: "tenant with a slash",
            text: "[source]\nkind = \"hawkbit\"\nurl = \"https://x\"\ntenant = \"a/b\"\n",
            line: 4,
            key: Some("tenant"),
            message: "source.tenant: \"a/b\" may not contain '/', '?', '#' or spaces",
        },
    ]);
}

#[test]
fn hawkbit_source_values_are_checked() {
    check(&[
        Case {
            name: "empty controller id",
            text: "[source]\nkind = \"hawkbit\"\nurl = \"https://x\"\ncontroller_id = \"\"\n",
            line: 4,
            key: Some("controller_id"),
            message: "source.controller_id: must not be empty",
        },
        Case {
            name: "both tokens",
            text: concat!(
                "[source]\nkind = \"hawkbit\"\nurl = \"https://x\"\n",
                "target_token = \"a\"\ngateway_token = \"b\"\n"
            ),
            line: 5,
            key: Some("gateway_token"),
            message: "source: set target_token or gateway_token, not both",
        },
        Case {
            name: "blank token",
            text: "[source]\nkind = \"hawkbit\"\nurl = \"https://x\"\ntarget_token = \" \"\n",
            line: 4,
            key: Some("target_token"),
            message: "source.target_token: must not be empty",
        },
        Case {
            name: "zero floor",
            text: "[source]\nkind = \"hawkbit\"\nurl = \"https://x\"\nmin_poll_interval = \"0s\"\n",
            line: 4,
            key: Some("min_poll_interval"),
            message: "source.min_poll_interval: must not be zero",
        },
        Case {
            name: "bad selector",
            text: concat!(
                "[source]\nkind = \"hawkbit\"\nurl = \"https://x\"\n",
                "chunks = { other = \"os\" }\n"
            ),
            line: 4,
            key: Some("chunks"),
            message: "source.chunks: \"other\" = \"os\": expected \"part:<part>\" or \"name:<name>\"",
        },
        Case {
            name: "unknown device in mapping",
            text: concat!(
                "[source]\nkind = \"hawkbit\"\nurl = \"https://x\"\n\n",
                "[source.chunks]\nother = \"part:os\"\nghost = \"name:x\"\n\n",
                "[[device]]\nid = \"other\"\ntype = \"t\"\nhandler = \"command\"\n",
                "update_command = [\"u\"]\n"
            ),
            line: 7,
            key: Some("chunks"),
            message: "source.chunks: no [[device]] with id \"ghost\"",
        },
    ]);
}
