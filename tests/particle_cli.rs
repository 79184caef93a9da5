//! An independent check of the simulated device in `particle_sim`: the real
//! `particle-cli` 3.19.0 (the last with serial YMODEM; `.ci/run` installs it
//! from npm) flashes it with `particle flash --serial` and reads it with
//! `particle serial identify` and `particle serial inspect`, as it would a
//! Boron in listening mode. The CLI sends differently from the agent (128-byte
//! blocks, a zero CRC-16, its header without waiting for a `C`), and the
//! simulator must take that as the device does.

mod particle_sim;
mod process;
mod xmodem_sim;

use std::path::{Path, PathBuf};
use std::time::Duration;

use particle_sim::{Sim, SimConfig, sha_of, user_binary};
use process::{finish, until_or};

const BORON: u16 = 13;

/// `FOTA_PARTICLE_CLI`, or where `.ci/run` installs it.
fn particle_cli() -> PathBuf {
    std::env::var_os("FOTA_PARTICLE_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME");
            Path::new(&home).join(".cache/fota-agent/particle-cli/node_modules/.bin/particle")
        })
}

/// `particle ARGS` to its end, with its own home (no login, no update check).
async fn particle(home: &Path, args: &[&str]) -> (bool, String) {
    let cli = particle_cli();
    assert!(
        cli.exists(),
        "{} is missing: .ci/run installs particle-cli 3.19.0 there (npm)",
        cli.display()
    );
    let mut cmd = tokio::process::Command::new(&cli);
    cmd.args(args)
        .env("HOME", home)
        .env("PARTICLE_DISABLE_UPDATE", "true");
    finish(&mut cmd, &format!("particle {args:?}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn particle_cli_flashes_identifies_and_inspects_the_simulated_device() {
    let tmp = tempfile::tempdir().unwrap();
    let link = tmp.path().join("usb-Particle_Boron");
    let v7 = user_binary(BORON, 4321, 7, 5000, 7);
    let image = tmp.path().join("boron-7.bin");
    std::fs::write(&image, &v7).unwrap();
    let sim = Sim::start(SimConfig {
        platform_id: BORON,
        os6: false,
        // The device's own receive timeout: the CLI never waits for it.
        nak_timeout: Duration::from_secs(5),
        reset_gap: Duration::from_millis(300),
        user: Some(user_binary(BORON, 4321, 5, 3000, 5)),
        port_link: link.clone(),
    });
    let state = || format!("sim: {:?}", sim.state());
    until_or("the port", || link.exists(), state).await;
    let port = link.to_str().unwrap();

    // Opening at 28800 starts listening mode; `f`, then YMODEM.
    let (ok, log) = particle(
        tmp.path(),
        &[
            "flash",
            "--serial",
            image.to_str().unwrap(),
            "--port",
            port,
            "--yes",
        ],
    )
    .await;
    assert!(ok && log.contains("Flash success!"), "{log}\n{}", state());
    until_or("the reset", || sim.state().resets == 1, state).await;
    let s = sim.state();
    assert_eq!(s.user_sha.as_deref(), Some(sha_of(&v7).as_str()), "{s:?}");
    assert_eq!((s.applied, s.flash_starts), (1, 1), "{s:?}");
    // 5000 bytes in 128-byte blocks, each with a zero CRC-16 the device ignores.
    assert_eq!(s.blocks, 40, "{s:?}");
    assert!(s.bad_crc16 >= 40, "{s:?}");

    // After the reset the device is out of listening mode; the host's open at
    // 28800 (as the agent does, or the SETUP button) puts it back.
    until_or("the port again", || link.exists(), state).await;
    drop(fota_agent::serial::SerialLink::open(&link, 28_800).unwrap());
    until_or("listening mode", || sim.state().listening, state).await;
    let (ok, log) = particle(tmp.path(), &["serial", "identify", "--port", port]).await;
    assert!(ok, "{log}");
    assert!(
        log.contains("Your device id is e00fce68aabbccddeeff0011")
            && log.contains("Your system firmware version is 5.9.0"),
        "{log}"
    );
    let (ok, log) = particle(tmp.path(), &["serial", "inspect", "--port", port]).await;
    assert!(ok, "{log}");
    assert!(
        log.contains("Platform: 13") && log.contains(&format!("UUID: {}", sha_of(&v7))),
        "{log}"
    );
}
