//! Keys and signatures made with Debian's `minisign` CLI, the tool operators
//! use (`.ci/run` installs it), so the agent is checked against real
//! signatures rather than ones it made itself.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A minisign key pair in `dir`: `<name>.pub` and `<name>.key` (no password).
pub struct KeyPair {
    pub public: PathBuf,
    pub secret: PathBuf,
}

pub fn keypair(dir: &Path, name: &str) -> KeyPair {
    let pair = KeyPair {
        public: dir.join(format!("{name}.pub")),
        secret: dir.join(format!("{name}.key")),
    };
    let out = Command::new("minisign")
        .args(["-G", "-W", "-f", "-p"])
        .arg(&pair.public)
        .arg("-s")
        .arg(&pair.secret)
        .output()
        .expect("minisign (apt install minisign)");
    assert!(out.status.success(), "{out:?}");
    pair
}

impl KeyPair {
    /// Signs `file` into `<file>.minisig` with `comment` as the trusted comment.
    pub fn sign(&self, file: &Path, comment: &str) -> PathBuf {
        let out = Command::new("minisign")
            .arg("-S")
            .arg("-s")
            .arg(&self.secret)
            .arg("-m")
            .arg(file)
            .args(["-t", comment])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mut sig = file.as_os_str().to_owned();
        sig.push(".minisig");
        PathBuf::from(sig)
    }
}

/// A signed bundle: a ustar tar of `image` and its `.minisig` (both by file
/// name), made with GNU tar as an operator would.
pub fn bundle(image: &Path, out: &Path) {
    let dir = image.parent().unwrap();
    let name = image.file_name().unwrap().to_str().unwrap();
    let status = Command::new("tar")
        .arg("--format=ustar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(name)
        .arg(format!("{name}.minisig"))
        .status()
        .unwrap();
    assert!(status.success());
}
