//! The particle handler through the `fota-agent` binary (and, for a binary the
//! agent would refuse, its flash function through the library) against the
//! simulated device in `particle_sim`: listening mode at 28800 baud, `s`,
//! YMODEM, validation, reset with the port away for a moment.

mod particle_sim;
mod process;
mod xmodem_sim;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use fota_agent::handler::particle::console::enter_listening;
use fota_agent::handler::particle::flash::{FlashOptions, flash};
use fota_agent::progress::{Progress, ProgressKind, ProgressStep};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use particle_sim::{Sim, SimConfig, sha_of, user_binary};
use process::{exit_within, finish, until_or, with_config};

const BORON: u16 = 13;
const ARGON: u16 = 12;
const PRODUCT: u16 = 4321;

struct Rig {
    tmp: tempfile::TempDir,
    config: PathBuf,
    link: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("firmware/boron")).unwrap();
        let link = dir.join("usb-Particle_Boron");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\nstate_dir = {state:?}\npoll_interval = \"1h\"\nupdate_timeout = \"2m\"\n\
                 [status]\nlisten = \"127.0.0.1:{status}\"\n\
                 [source]\nkind = \"directory\"\npath = {fw:?}\n\
                 [[device]]\nid = \"boron\"\ntype = \"boron\"\nhandler = \"particle\"\n\
                 version_scheme = \"particle\"\nport = {port:?}\n\
                 platform_id = {BORON}\nproduct_id = {PRODUCT}\n\
                 response_timeout = \"3s\"\nreset_timeout = \"20s\"\n",
                state = dir.join("state").display().to_string(),
                fw = dir.join("firmware").display().to_string(),
                port = link.display().to_string(),
                status = process::free_port(),
            ),
        )
        .unwrap();
        Rig { tmp, config, link }
    }

    fn sim(&self, user: Option<Vec<u8>>, os6: bool) -> Sim {
        Sim::start(SimConfig {
            platform_id: BORON,
            os6,
            // The device waits 5 s; shorter here, below `response_timeout`.
            nak_timeout: Duration::from_millis(800),
            reset_gap: Duration::from_millis(300),
            user,
            port_link: self.link.clone(),
        })
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    /// The directory source offers `bin` as `version`.
    fn offer(&self, version: &str, bin: &[u8]) {
        let fw = self.tmp.path().join("firmware/boron");
        std::fs::write(fw.join(format!("{version}.bin")), bin).unwrap();
        std::fs::write(
            fw.join(format!("{version}.properties")),
            format!("version = {version}\nimage = {version}.bin\n"),
        )
        .unwrap();
    }

    /// `fota-agent install --device boron IMAGE --version V`, to its end.
    async fn install(&self, image: &Path, version: &str) -> (bool, String) {
        let image = image.to_str().unwrap();
        self.output(&["install", "--device", "boron", image, "--version", version])
            .await
    }

    /// `fota-agent ARGS`, which must succeed; its output.
    async fn agent(&self, args: &[&str]) -> String {
        let (ok, log) = self.output(args).await;
        assert!(ok, "{args:?}: {log}");
        log
    }

    /// `fota-agent ARGS` to its end: whether it succeeded, and its output.
    async fn output(&self, args: &[&str]) -> (bool, String) {
        let mut cmd = tokio::process::Command::from(with_config(&self.config));
        finish(cmd.args(args), &format!("fota-agent {args:?}")).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_version_6_to_7_over_ymodem_confirmed_by_the_module_sha() {
    let rig = Rig::new();
    let v5 = user_binary(BORON, PRODUCT, 5, 3000, 5);
    let v6 = user_binary(BORON, PRODUCT, 6, 5000, 6);
    let v7 = user_binary(BORON, PRODUCT, 7, 7000, 7);
    let sim = rig.sim(Some(v5), false);

    // The device runs a binary the agent never saw: its version is unknown.
    let image6 = rig.write("boron-6.bin", &v6);
    let (ok, log) = rig.install(&image6, "6").await;
    assert!(ok, "{log}");
    assert!(log.contains("boron: success"), "{log}");
    assert!(!log.contains("the port stayed"), "{log}");
    let s = sim.state();
    assert_eq!(s.user_sha.as_deref(), Some(sha_of(&v6).as_str()), "{log}");
    assert_eq!((s.applied, s.bad_crc16), (1, 0), "{s:?}");
    assert!(s.blocks >= 5, "{s:?}");

    // The directory source offers 7; `run` reads 6 from the module SHA.
    rig.offer("7", &v7);
    let log_path = rig.tmp.path().join("run.log");
    let mut run = process::start_run(
        &rig.config,
        std::fs::File::create(&log_path).unwrap().into(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    until_or(
        "the run to install 7",
        || log().contains("update succeeded") && sim.state().applied == 2,
        || format!("{}\nsim: {:?}", log(), sim.state()),
    )
    .await;
    kill(Pid::from_raw(run.id() as i32), Signal::SIGTERM).unwrap();
    assert!(exit_within(&mut run, Duration::from_secs(20)).is_some());
    let log = log();
    assert!(log.contains("firmware_version=7"), "{log}");
    // The port went away after the restart and the version came from `s`.
    assert!(!log.contains("the port stayed"), "{log}");
    let s = sim.state();
    assert_eq!(s.user_sha.as_deref(), Some(sha_of(&v7).as_str()), "{log}");
    assert_eq!(s.bad_crc16, 0);
    let known = std::fs::read_to_string(rig.tmp.path().join("state/boron.particle.json")).unwrap();
    assert!(
        known.contains(&sha_of(&v7)) && known.contains(&sha_of(&v6)),
        "{known}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_binaries_are_refused_before_anything_is_sent() {
    let rig = Rig::new();
    let sim = rig.sim(None, false);
    let cases = [
        (
            user_binary(ARGON, PRODUCT, 7, 2000, 1),
            "7",
            "built for platform 12, the device is platform 13",
        ),
        (
            user_binary(BORON, 1234, 7, 2000, 2),
            "7",
            "product id 1234 ≠ configured 4321: quarantined",
        ),
        (
            user_binary(BORON, PRODUCT, 7, 2000, 3),
            "8",
            "its PRODUCT_VERSION is 7, but version 8 was offered",
        ),
    ];
    for (i, (bin, version, why)) in cases.iter().enumerate() {
        let image = rig.write(&format!("bad-{i}.bin"), bin);
        let (ok, log) = rig.install(&image, version).await;
        assert!(!ok, "{log}");
        assert!(log.contains(why), "{why}: {log}");
    }
    let mut crc = user_binary(BORON, PRODUCT, 7, 2000, 4);
    let n = crc.len();
    crc[n - 1] ^= 1;
    let image = rig.write("crc.bin", &crc);
    let (ok, log) = rig.install(&image, "7").await;
    assert!(!ok && log.contains("CRC-32 mismatch"), "{log}");
    let s = sim.state();
    assert_eq!((s.flash_starts, s.blocks, s.applied), (0, 0, 0), "{s:?}");
}

/// Another product's (and another platform's) binary offered by the directory
/// source is refused by its suffix before download: `check` says why, `run`
/// never starts the update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_products_binary_is_quarantined_before_download() {
    let rig = Rig::new();
    let v6 = user_binary(BORON, PRODUCT, 6, 3000, 6);
    let sim = rig.sim(Some(v6.clone()), false);
    // The agent gave the device its 6 earlier: it knows the module SHA.
    let state = rig.tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("boron.particle.json"),
        format!("{{\"versions\": {{\"{}\": \"6\"}}}}", sha_of(&v6)),
    )
    .unwrap();
    rig.offer("7", &user_binary(BORON, 1234, 7, 3000, 7));
    rig.offer("8", &user_binary(ARGON, PRODUCT, 8, 3000, 8));
    const WHY: &str = "product id 1234 ≠ configured 4321: quarantined";

    let check = rig.agent(&["check"]).await;
    assert!(check.contains(&format!("not 7: {WHY}")), "{check}");
    assert!(
        check.contains("not 8: built for platform 12, the device is platform 13"),
        "{check}"
    );
    assert!(
        check.contains("current=6") && check.contains("would get=-"),
        "{check}"
    );
    let run = rig.agent(&["run", "--once"]).await;
    assert_eq!(run.matches(WHY).count(), 1, "{run}");
    assert!(run.contains("boron: 6: UP_TO_DATE"), "{run}");
    assert!(!run.contains("particle binary"), "{run}");
    let s = sim.state();
    assert_eq!((s.flash_starts, s.blocks, s.applied), (0, 0, 0), "{s:?}");
    assert_eq!(s.user_sha.as_deref(), Some(sha_of(&v6).as_str()));

    // Locked to the quarantined version: `check` says why it is not installed.
    rig.agent(&["lock", "boron", "7"]).await;
    let check = rig.agent(&["check"]).await;
    assert!(
        check.contains(&format!("locked to 7: version 7 is refused: {WHY}")),
        "{check}"
    );
    rig.agent(&["run", "--once"]).await;
    assert_eq!(sim.state().flash_starts, 0);
}

/// A test sends what the agent refuses (through the library's flash function):
/// the device's own checks reject it, and the flash fails with its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_rejects_what_the_agent_would_refuse() {
    let rig = Rig::new();
    let sim = rig.sim(None, false);
    let mut corrupt = user_binary(BORON, PRODUCT, 7, 3000, 9);
    corrupt[100] ^= 0xFF;
    // An end address past the user part's 256 KiB.
    let mut too_long = user_binary(BORON, PRODUCT, 7, 3000, 10);
    too_long[4..8].copy_from_slice(&(0x000B_4000u32 + 0x4_0001).to_le_bytes());
    for (bin, code, meaning) in [
        (too_long, -1300, "bad end address"),
        (
            user_binary(ARGON, PRODUCT, 7, 3000, 8),
            -1360,
            "invalid platform",
        ),
        (corrupt, -1330, "CRC"),
    ] {
        let (tx, mut rx) = tokio::sync::broadcast::channel(256);
        let progress = Progress::new("boron", "7", tx);
        progress
            .define_sequence(&[ProgressStep::Transferring, ProgressStep::Updating])
            .unwrap();
        progress.next().unwrap();
        let (mut link, info) = enter_listening(
            &rig.link,
            28_800,
            Duration::from_secs(20),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(info.platform_id, BORON);
        let opts = FlashOptions {
            response_timeout: Duration::from_secs(3),
            retries: 5,
            baud: 28_800,
            reset_timeout: Duration::from_secs(20),
        };
        let in_transfer = AtomicBool::new(false);
        let len = bin.len() as u64;
        let err = flash(
            &mut link,
            &mut &bin[..],
            len,
            &opts,
            &progress,
            &in_transfer,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!("Validation failed: {code}")) && err.contains(meaning),
            "{err}"
        );
        let mut percents = 0;
        while let Ok(e) = rx.try_recv() {
            percents += usize::from(matches!(
                e.kind,
                ProgressKind::Percent(ProgressStep::Transferring, _)
            ));
        }
        assert!(percents > 0, "no transfer progress reported");
    }
    let s = sim.state();
    assert_eq!(s.validation_failures, vec![-1300, -1360, -1330], "{s:?}");
    assert_eq!(s.applied, 0);
    assert_eq!(s.user_sha, None);
}

/// A binary every check of the agent passes (it fits the largest user part,
/// 1.5 MiB) but this device's user part (256 KiB) does not: the device refuses
/// it at the YMODEM header, and the update fails with its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_the_device_refuses_fails_the_update_with_its_message() {
    let rig = Rig::new();
    let sim = rig.sim(None, false);
    let image = rig.write("big.bin", &user_binary(BORON, PRODUCT, 7, 300 * 1024, 11));
    let (ok, log) = rig.install(&image, "7").await;
    assert!(!ok, "{log}");
    assert!(
        log.contains("boron: failed")
            && log.contains("The file size is higher than the allowed space memory!"),
        "{log}"
    );
    let s = sim.state();
    assert_eq!((s.flash_starts, s.applied, s.blocks), (1, 0, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_os_6_device_fails_with_its_message() {
    let rig = Rig::new();
    let sim = rig.sim(None, true);
    let image = rig.write("boron-7.bin", &user_binary(BORON, PRODUCT, 7, 2000, 7));
    let (ok, log) = rig.install(&image, "7").await;
    assert!(!ok, "{log}");
    assert!(
        log.contains("Serial/YModem flashing is no longer supported") && log.contains("dfu-util"),
        "{log}"
    );
    assert_eq!(sim.state().blocks, 0);
}
