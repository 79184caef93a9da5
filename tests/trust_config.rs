//! Secure defaults refused by `check-config` through the binary: plain-HTTP server
//! URLs without `https_only = false`, a status endpoint facing the network
//! without `allow_remote` and its token.

use std::path::Path;
use std::process::Output;

fn check_config(dir: &Path, body: &str) -> Output {
    let path = dir.join("config.toml");
    std::fs::write(&path, body).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_fota-agent"))
        .env_remove("FOTA_AGENT_CONFIG")
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap()
}

/// Exit 78 with one `config.toml:<line>:` line naming every word of `names`.
fn refused(dir: &Path, body: &str, line: usize, names: &[&str]) {
    let out = check_config(dir, body);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{body}\n{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("config.toml:{line}:")), "{stderr}");
    for name in names {
        assert!(stderr.contains(name), "{name} not in {stderr}");
    }
}

fn accepted(dir: &Path, body: &str) {
    let out = check_config(dir, body);
    assert!(
        out.status.success(),
        "{body}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const SOURCES: [(&str, &str); 3] = [
    (
        "[source]\nkind = \"hawkbit\"\nurl = \"http://hb.example:8080\"\ntarget_token = \"t0k\"\n",
        "source.url",
    ),
    (
        "[source]\nkind = \"thingsboard\"\nurl = \"http://tb.example\"\naccess_token = \"t0k\"\n\
         gateway_device = \"gw\"\n",
        "source.url",
    ),
    (
        "[source]\nkind = \"mcs\"\nbase_url = \"http://mcs.example/mcs/v2\"\n\
         device_id = \"D1\"\ndevice_key = \"K1\"\ngateway_device = \"gw\"\n",
        "source.base_url",
    ),
];

#[test]
fn plain_http_server_urls_need_https_only_false() {
    let tmp = tempfile::tempdir().unwrap();
    let state = format!(
        "[agent]\nstate_dir = {:?}\n[[device]]\nid = \"gw\"\ntype = \"t\"\nhandler = \"command\"\n\
         update_command = [\"u\"]\n",
        tmp.path().join("state")
    );
    for (source, key) in SOURCES {
        refused(
            tmp.path(),
            &format!("{state}{source}"),
            10,
            &[key, "https_only"],
        );
        accepted(tmp.path(), &format!("{state}{source}https_only = false\n"));
        let https = source.replace("http://", "https://");
        accepted(tmp.path(), &format!("{state}{https}"));
        refused(
            tmp.path(),
            &format!("{state}{source}https_only = true\n"),
            10,
            &[key, "https_only"],
        );
    }
}

#[test]
fn a_status_endpoint_facing_the_network_needs_allow_remote_and_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let token = "token = \"0123456789abcdef\"\n";
    for listen in ["0.0.0.0:8470", "192.168.1.10:8470", "[::]:8470"] {
        let status = format!("[status]\nlisten = \"{listen}\"\n");
        refused(tmp.path(), &status, 2, &["status.listen", "allow_remote"]);
        refused(
            tmp.path(),
            &format!("{status}allow_remote = true\n"),
            3,
            &["status.allow_remote", "token"],
        );
        accepted(tmp.path(), &format!("{status}allow_remote = true\n{token}"));
    }
    accepted(tmp.path(), "[status]\nlisten = \"127.0.0.1:8470\"\n");
    accepted(tmp.path(), "[status]\nlisten = \"[::1]:8470\"\n");
}
