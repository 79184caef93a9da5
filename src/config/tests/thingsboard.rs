//! `kind = "thingsboard"`: the bindings, transports and defaults, and every
//! mistake with its line and key — never echoing a token.

use std::path::PathBuf;
use std::time::Duration;

use super::{PATH, parse, parse_err};
use crate::config::{
    AccessToken, OtaKind, SourceConfig, ThingsboardBinding, ThingsboardConfig, ThingsboardTransport,
};

const DEVICES: &str = "
[[device]]
id = \"gw\"
type = \"gateway\"
handler = \"command\"
update_command = [\"u\"]

[[device]]
id = \"gw-app\"
type = \"app\"
handler = \"command\"
update_command = [\"u\"]

[[device]]
id = \"esp-1\"
type = \"esp\"
handler = \"command\"
update_command = [\"u\"]
";

fn tb(text: &str) -> ThingsboardConfig {
    let full = format!("{text}{DEVICES}");
    match parse(&full).unwrap_or_else(|e| panic!("{e}")).source {
        SourceConfig::Thingsboard(tb) => *tb,
        other => panic!("{other:?}"),
    }
}

fn binding(id: &str, token: &str, kind: OtaKind) -> ThingsboardBinding {
    ThingsboardBinding {
        device_id: id.into(),
        token: AccessToken(token.into()),
        kind,
    }
}

#[test]
fn http_with_gateway_software_and_attached_tokens() {
    let c = tb(r#"
[agent]
state_dir = "/var/lib/x"
[source]
kind = "thingsboard"
url = "https://tb.example.com/"
access_token = "GW"
gateway_device = "gw"
software_device = "gw-app"
chunk_size = 1024
poll_timeout = "20s"
[source.tokens]
"esp-1" = "ESP1"
"#);
    assert_eq!(
        c.transport,
        ThingsboardTransport::Http {
            url: "https://tb.example.com".into()
        }
    );
    assert_eq!(
        c.bindings,
        vec![
            binding("gw", "GW", OtaKind::Firmware),
            binding("gw-app", "GW", OtaKind::Software),
            binding("esp-1", "ESP1", OtaKind::Firmware),
        ]
    );
    assert_eq!(c.chunk_size, 1024);
    assert_eq!(c.poll_timeout, Duration::from_secs(20));
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/x/thingsboard"));
    // Tokens never show in Debug output.
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("ESP1") && !shown.contains("\"GW\""),
        "{shown}"
    );
}

#[test]
fn mqtt_defaults() {
    let c = tb(
        "[source]\nkind = \"thingsboard\"\ntransport = \"mqtt\"\nhost = \"tb\"\n\
                [source.tokens]\n\"esp-1\" = \"T\"\n",
    );
    assert_eq!(
        c.transport,
        ThingsboardTransport::Mqtt {
            host: "tb".into(),
            port: 8883,
            tls: true,
        }
    );
    assert_eq!(c.chunk_size, 64 * 1024);
    assert_eq!(c.poll_timeout, Duration::from_secs(30));
}

#[test]
fn plain_mqtt_needs_https_only_false() {
    let c = tb(
        "[source]\nkind = \"thingsboard\"\ntransport = \"mqtt\"\nhost = \"tb\"\n\
         tls = false\nhttps_only = false\n[source.tokens]\n\"esp-1\" = \"T\"\n",
    );
    assert_eq!(
        c.transport,
        ThingsboardTransport::Mqtt {
            host: "tb".into(),
            port: 1883,
            tls: false,
        }
    );
}

#[test]
fn mistakes_name_line_and_key_without_the_token() {
    let cases: &[(&str, &str, usize, &str, &str)] = &[
        (
            "missing url",
            "[source]\nkind = \"thingsboard\"\naccess_token = \"S3CRET\"\ngateway_device = \"gw\"\n",
            1,
            "url",
            "source: missing key \"url\" (required by transport \"http\")",
        ),
        (
            "bad url",
            "[source]\nkind = \"thingsboard\"\nurl = \"ftp://x\"\n",
            3,
            "url",
            "source.url: \"ftp://x\" is not an http:// or https:// URL",
        ),
        (
            "unknown transport",
            "[source]\nkind = \"thingsboard\"\ntransport = \"coap\"\n",
            3,
            "transport",
            "source: unknown transport \"coap\" (known: http, mqtt)",
        ),
        (
            "host on http",
            "[source]\nkind = \"thingsboard\"\nurl = \"https://x\"\nhost = \"h\"\n",
            4,
            "host",
            "source: key \"host\" does not apply to transport \"http\"",
        ),
        (
            "plain mqtt without the opt-out",
            "[source]\nkind = \"thingsboard\"\ntransport = \"mqtt\"\nhost = \"h\"\ntls = false\n",
            5,
            "tls",
            "source.tls: plain MQTT sends the access token in clear; use TLS or write https_only = false in [source] to allow cleartext",
        ),
        (
            "tls on http",
            "[source]\nkind = \"thingsboard\"\nurl = \"https://x\"\ntls = true\n",
            4,
            "tls",
            "source: key \"tls\" does not apply to transport \"http\"",
        ),
        (
            "bad port",
            "[source]\nkind = \"thingsboard\"\ntransport = \"mqtt\"\nhost = \"h\"\nport = 0\n",
            5,
            "port",
            "source.port: must be between 1 and 65535, got 0",
        ),
        (
            "token with a slash",
            "[source]\nkind = \"thingsboard\"\nurl = \"https://x\"\naccess_token = \"S3/CRET\"\n",
            4,
            "access_token",
            "source.access_token: a token must be non-empty without whitespace, '/', '?', '#' or '%'",
        ),
        (
            "gateway token binds nothing",
            "[source]\nkind = \"thingsboard\"\nurl = \"https://x\"\naccess_token = \"S3CRET\"\n",
            4,
            "access_token",
            "source.access_token: set gateway_device and/or software_device to name the [[device]] it updates",
        ),
    ];
    check_mistakes(cases);
}

#[test]
fn more_mistakes_name_line_and_key_without_the_token() {
    let cases: &[(&str, &str, usize, &str, &str)] = &[
        (
            "gateway device without token",
            "[source]\nkind = \"thingsboard\"\nurl = \"https://x\"\ngateway_device = \"gw\"\n",
            4,
            "gateway_device",
            "source.gateway_device: needs access_token (the gateway's own token)",
        ),
        (
            "nothing bound",
            "[source]\nkind = \"thingsboard\"\nurl = \"https://x\"\n",
            1,
            "access_token",
            "source: no device is bound to ThingsBoard: …",
        ),
        (
            "unknown device",
            "[source]\nkind = \"thingsboard\"\nurl = \"https://x\"\n[source.tokens]\nesp-9 = \"S3CRET\"\n",
            5,
            "tokens",
            "source.tokens: \"esp-9\" is not the id of a [[device]]",
        ),
        (
            "same device twice",
            "[source]\nkind = \"thingsboard\"\nurl = \"https://x\"\naccess_token = \"S3CRET\"\n\
             gateway_device = \"gw\"\nsoftware_device = \"gw\"\n",
            6,
            "software_device",
            "source.software_device: \"gw\" is already gateway_device; …",
        ),
        (
            "chunk size",
            "[source]\nkind = \"thingsboard\"\nurl = \"https://x\"\nchunk_size = 0\n\
             [source.tokens]\nesp-1 = \"S3CRET\"\n",
            4,
            "chunk_size",
            "source.chunk_size: must be between 1 and 16777216 bytes, got 0",
        ),
        (
            "path on thingsboard",
            "[source]\nkind = \"thingsboard\"\npath = \"/x\"\n",
            3,
            "path",
            "source: key \"path\" does not apply to kind \"thingsboard\"",
        ),
        (
            "url on directory",
            "[source]\nkind = \"directory\"\nurl = \"https://x\"\n",
            3,
            "url",
            "source: key \"url\" does not apply to kind \"directory\"",
        ),
    ];
    check_mistakes(cases);
}

/// Runs each error case of this file.
fn check_mistakes(cases: &[(&str, &str, usize, &str, &str)]) {
    for (name, text, line, key, message) in cases {
        let full = format!("{text}{DEVICES}");
        let err = parse_err(&full);
        let shown = err.to_string();
        assert_eq!(err.line(), Some(*line), "{name}: {shown}");
        assert_eq!(err.key(), Some(*key), "{name}: {shown}");
        assert!(
            shown.starts_with(&format!("{PATH}:{line}: ")),
            "{name}: {shown}"
        );
        match message.strip_suffix('…') {
            Some(start) => assert!(err.message().starts_with(start), "{name}: {shown}"),
            None => assert_eq!(err.message(), *message, "{name}"),
        }
        assert!(
            !shown.contains("S3CRET") && !shown.contains("S3/CRET"),
            "{name}: {shown}"
        );
    }
}
