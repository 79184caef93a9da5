//! Signed firmware through the `fota-agent` binary: keys and signatures made by
//! the real `minisign` CLI, the directory source, and a command handler whose
//! update script records every run, so "the device is untouched" is checked.

mod minisign;
mod process;

use std::path::PathBuf;
use std::process::{Command, Output};

use process::{text, write_exec};

struct Gateway {
    tmp: tempfile::TempDir,
    release: minisign::KeyPair,
    config: PathBuf,
}

/// A gateway whose device `dev` (type `t`) runs 1.0 and is offered `fw.bin` as
/// 2.0 from the directory source; `[trust]` holds `trust` (keys relative to the
/// config's folder: `keys/release.pub`).
fn gateway(trust: &str) -> Gateway {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let release = minisign::keypair(&dir.join("keys"), "release");
    let fw = dir.join("firmware/t");
    std::fs::create_dir_all(&fw).unwrap();
    std::fs::write(fw.join("fw.bin"), b"firmware 2.0").unwrap();
    std::fs::write(fw.join("fw.properties"), "version = 2.0\nimage = fw.bin\n").unwrap();
    let d = dir.display();
    write_exec(
        &dir.join("version.sh"),
        &format!("cat {d}/version 2>/dev/null || echo 1.0\n"),
    );
    write_exec(
        &dir.join("update.sh"),
        &format!("cat \"$FOTA_IMAGE\" >> {d}/flashed\necho \"$FOTA_VERSION\" > {d}/version\n"),
    );
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{d}/state\"\n\
             [source]\nkind = \"directory\"\npath = \"{d}/firmware\"\n\
             {trust}\n\
             [[device]]\nid = \"dev\"\ntype = \"t\"\nhandler = \"command\"\n\
             version_command = [\"{d}/version.sh\"]\nupdate_command = [\"{d}/update.sh\"]\n"
        ),
    )
    .unwrap();
    Gateway {
        tmp,
        release,
        config,
    }
}

const KEYS: &str = "[trust]\npublic_keys = [\"keys/release.pub\"]";

impl Gateway {
    fn image(&self) -> PathBuf {
        self.tmp.path().join("firmware/t/fw.bin")
    }

    fn run(&self, args: &[&str]) -> (Output, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_fota-agent"))
            .env("RUST_LOG", "info")
            .env_remove("FOTA_AGENT_CONFIG")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        let text = text(&out);
        (out, text)
    }

    /// Whether the update script ever ran.
    fn flashed(&self) -> Option<String> {
        std::fs::read_to_string(self.tmp.path().join("flashed")).ok()
    }

    /// `run --once` refuses the update with `reason`; the device is untouched.
    fn refuses(&self, reason: &str) {
        let (_, out) = self.run(&["run", "--once"]);
        assert!(out.contains(reason), "missing {reason:?} in\n{out}");
        assert!(out.contains("failed"), "{out}");
        assert_eq!(self.flashed(), None, "the device was written:\n{out}");
        let left: Vec<_> = std::fs::read_dir(self.tmp.path().join("state/downloads"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "refused image left behind: {left:?}");
    }
}

#[test]
fn a_correctly_signed_image_installs() {
    let gw = gateway(KEYS);
    gw.release
        .sign(&gw.image(), "fota-agent type=t version=2.0");
    let (out, text) = gw.run(&["run", "--once"]);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("signature verified"), "{text}");
    assert!(text.contains("1.0 → 2.0: success"), "{text}");
    assert_eq!(gw.flashed().as_deref(), Some("firmware 2.0"));
}

#[test]
fn an_image_signed_by_an_untrusted_key_is_refused() {
    let gw = gateway(KEYS);
    let mallory = minisign::keypair(gw.tmp.path(), "mallory");
    mallory.sign(&gw.image(), "type=t version=2.0");
    gw.refuses("signature: not signed by a trusted key");
}

#[test]
fn a_signature_for_another_version_or_type_is_refused() {
    let gw = gateway(KEYS);
    gw.release.sign(&gw.image(), "type=t version=1.9");
    gw.refuses("signature: signed for version 1.9, offered as 2.0");
    gw.release.sign(&gw.image(), "type=other version=2.0");
    gw.refuses("signature: signed for type other, offered as t");
}

#[test]
fn an_image_changed_after_signing_is_refused() {
    let gw = gateway(KEYS);
    gw.release.sign(&gw.image(), "type=t version=2.0");
    std::fs::write(gw.image(), b"firmware 2.0 with a backdoor").unwrap();
    gw.refuses("signature: does not match the image");
}

#[test]
fn an_unsigned_image_is_refused_once_keys_are_set() {
    let gw = gateway(KEYS);
    gw.refuses("signature: no .minisig");
}

#[test]
fn a_second_key_lets_firmware_through_during_a_rotation() {
    let gw = gateway("[trust]\npublic_keys = [\"keys/release.pub\", \"keys/next.pub\"]");
    let next = minisign::keypair(&gw.tmp.path().join("keys"), "next");
    next.sign(&gw.image(), "type=t version=2.0");
    let (out, text) = gw.run(&["run", "--once"]);
    assert!(out.status.success(), "{text}");
    assert_eq!(gw.flashed().as_deref(), Some("firmware 2.0"), "{text}");
}

#[test]
fn without_keys_the_agent_says_authenticity_is_not_checked() {
    let gw = gateway("");
    let (out, text) = gw.run(&["run", "--once"]);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("firmware authenticity: not checked"),
        "{text}"
    );
    assert_eq!(gw.flashed().as_deref(), Some("firmware 2.0"));
}

#[test]
fn a_broken_trust_table_fails_check_config_with_its_line() {
    let gw = gateway("[trust]\npublic_keys = [\"keys/missing.pub\"]");
    let (out, text) = gw.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(
        text.contains("config.toml:7:") && text.contains("trust.public_keys"),
        "{text}"
    );
    let gw = gateway("[trust]\nrequire_signature = true");
    let (out, text) = gw.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(text.contains("needs at least one key"), "{text}");
}
