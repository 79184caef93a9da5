//! The mt7681 handler over a pty against the simulated module in `mt7681_sim`
//! (AT#Reboot, recovery mode, AT#UpdateFW, the SDK's 128-byte XMODEM receiver
//! writing into a simulated flash), through the engine and through the
//! `fota-agent` binary.

mod common;
mod mt7681_sim;
mod process;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_transfer_progress, failure};
use fota_agent::config::{
    AgentConfig, DeviceConfig, HandlerConfig, Mt7681Config, Mt7681Region, SerialConfig,
};
use fota_agent::engine::Engine;
use fota_agent::handler::UpdateHandler;
use fota_agent::handler::mt7681::{Mt7681Handler, encode_header};
use fota_agent::model::{FirmwareLocation, UpdatePolicy};
use fota_agent::progress::{Outcome, ProgressEvent, ProgressKind};
use fota_agent::source::directory::DirectorySource;
use fota_agent::version::VersionScheme;
use mt7681_sim::{Faults, Pty, SimConfig, SimOutcome};
use tokio::sync::broadcast;

/// Deterministic bytes that are not all alike (and include control characters).
fn contents(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

/// An SDK-style `*_header.bin`: the upgrade header, then the contents.
fn header_bin(region: Mt7681Region, contents: &[u8]) -> Vec<u8> {
    let mut v = encode_header(region, contents.len() as u32).to_vec();
    v.extend_from_slice(contents);
    v
}

struct Rig {
    tmp: tempfile::TempDir,
    engine: Engine,
    image: PathBuf,
    /// What `version_command` prints (the simulator rewrites it on success).
    version_file: PathBuf,
    events: broadcast::Receiver<ProgressEvent>,
}

/// An engine with one mt7681 device "wifi" running `current`, the image written
/// to `fw.bin`. `only_newer` is the engine's setting (the handler ignores it).
fn rig(pty: &Pty, region: Mt7681Region, image: &[u8], current: &str, only_newer: bool) -> Rig {
    rig_with(pty, region, image, current, only_newer, Keys::default())
}

/// Handler keys a test sets beyond [`rig`]'s.
struct Keys {
    response_timeout: Duration,
    /// `reset_command` as a shell script body (`$DIR`: the rig's folder).
    reset_script: Option<&'static str>,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            response_timeout: Duration::from_secs(1),
            reset_script: None,
        }
    }
}

/// [`rig`] with `keys`.
fn rig_with(
    pty: &Pty,
    region: Mt7681Region,
    image: &[u8],
    current: &str,
    only_newer: bool,
    keys: Keys,
) -> Rig {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("fota_agent=debug")
        .try_init();
    let tmp = tempfile::tempdir().unwrap();
    let image_path = tmp.path().join("fw.bin");
    std::fs::write(&image_path, image).unwrap();
    std::fs::create_dir_all(tmp.path().join("firmware")).unwrap();
    let version_file = tmp.path().join("version");
    std::fs::write(&version_file, format!("{current}\n")).unwrap();
    let script = tmp.path().join("version.sh");
    process::write_exec(&script, &format!("cat '{}'", version_file.display()));
    let reset_command = keys.reset_script.map(|body| {
        let reset = tmp.path().join("reset.sh");
        let dir = tmp.path().display().to_string();
        process::write_exec(&reset, &body.replace("$DIR", &format!("'{dir}'")));
        vec![reset.display().to_string()]
    });
    let cfg = Mt7681Config {
        serial: SerialConfig {
            port: pty.slave_path.clone(),
            baud: 115_200,
        },
        region,
        response_timeout: keys.response_timeout,
        retries: 3,
        version_command: vec![script.display().to_string()],
        reset_command,
        command_timeout: Duration::from_secs(10),
    };
    let device = DeviceConfig {
        id: "wifi".into(),
        device_type: "mt7681".into(),
        policy: UpdatePolicy::Immediate,
        version_scheme: VersionScheme::Esh,
        only_newer,
        group: None,
        lock: None,
        handler: HandlerConfig::Mt7681(cfg.clone()),
    };
    let handler = Arc::new(Mt7681Handler::new(
        "wifi",
        "mt7681",
        VersionScheme::Esh,
        &cfg,
    ));
    let engine = Engine::new(
        AgentConfig {
            state_dir: tmp.path().join("state"),
            poll_interval: Duration::from_secs(3600),
            // A hang ends here with the engine's own reason; the handler's step
            // timeouts (seconds) name the step instead.
            update_timeout: Duration::from_secs(120),
            confirm_window: Duration::from_secs(30),
            max_concurrent_updates: 1,
        },
        &Default::default(),
        Box::new(DirectorySource::new(&tmp.path().join("firmware"))),
        vec![(device, handler as Arc<dyn UpdateHandler>)],
    )
    .unwrap();
    let events = engine.subscribe();
    Rig {
        tmp,
        engine,
        image: image_path,
        version_file,
        events,
    }
}

impl Rig {
    async fn install(&self, version: &str) -> Outcome {
        self.engine
            .install(
                "wifi",
                FirmwareLocation::File(self.image.clone()),
                Some(version),
                vec![],
            )
            .await
            .unwrap()
    }

    fn sim(&self) -> SimConfig {
        let mut s = SimConfig::new();
        s.version_file = Some(self.version_file.clone());
        s
    }

    /// A module that stops answering at data block `block` (a cut transfer).
    fn silent_from_block(&self, block: u32) -> SimConfig {
        let mut s = self.sim();
        s.faults.silent_from_block = Some(block);
        s.idle = Duration::from_secs(2);
        s
    }

    fn kinds(&mut self) -> Vec<ProgressKind> {
        std::iter::from_fn(|| self.events.try_recv().ok())
            .map(|e| e.kind)
            .collect()
    }
}

/// [`rig`] for an STA image of `data`, the module running 1.0.
fn sta_rig(pty: &Pty, data: &[u8]) -> Rig {
    rig(
        pty,
        Mt7681Region::Sta,
        &header_bin(Mt7681Region::Sta, data),
        "1.0",
        true,
    )
}

/// Everything outside `[offset, offset + len)` is still erased (0xFF).
fn assert_only_region_written(flash: &[u8], offset: usize, len: usize) {
    assert!(
        flash[..offset].iter().all(|&b| b == 0xFF),
        "below the region"
    );
    assert!(
        flash[offset + len..].iter().all(|&b| b == 0xFF),
        "past the header's length"
    );
}

// ---------------------------------------------------------------- success

#[tokio::test]
async fn sta_firmware_lands_at_0x1f000_byte_identical() {
    let pty = Pty::open();
    let data = contents(5000, 1); // not a multiple of 128: the last block is padded
    let mut rig = rig(
        &pty,
        Mt7681Region::Sta,
        &header_bin(Mt7681Region::Sta, &data),
        "1.0",
        true,
    );
    let (outcome, sim) = tokio::join!(rig.install("2.0"), mt7681_sim::run(&pty, rig.sim()));
    assert_eq!(outcome, Outcome::Success, "{sim:?}");
    assert_eq!(sim.outcome, SimOutcome::Complete);
    assert_eq!(sim.reboots, 1);
    assert_eq!(sim.update_commands, 1);
    assert_eq!(sim.header, Some((4, 5000)));
    assert_eq!(sim.region_contents().unwrap(), &data[..]);
    assert_only_region_written(&sim.flash, 0x1F000, 5000);
    // Header block + 40 data blocks, all 128 bytes; nothing repeated.
    assert_eq!(sim.blocks_seen, 1 + 40);
    assert_eq!(sim.duplicates, 0);
    assert_eq!(sim.naks, 0);
    // The engine confirmed the new version the module reports.
    assert_eq!(
        std::fs::read_to_string(&rig.version_file).unwrap().trim(),
        "2.0"
    );
    assert_transfer_progress(&rig.kinds(), 5);
}

#[tokio::test]
async fn ap_firmware_lands_at_0x4f000() {
    let pty = Pty::open();
    let data = contents(1024, 2);
    let rig = rig(
        &pty,
        Mt7681Region::Ap,
        &header_bin(Mt7681Region::Ap, &data),
        "1.9",
        true,
    );
    let mut sim_cfg = rig.sim();
    sim_cfg.new_version = "1.10".into();
    let (outcome, sim) = tokio::join!(rig.install("1.10"), mt7681_sim::run(&pty, sim_cfg));
    assert_eq!(outcome, Outcome::Success, "{sim:?}");
    assert_eq!(sim.header, Some((6, 1024)));
    assert_eq!(&sim.flash[0x4F000..0x4F000 + 1024], &data[..]);
    assert_only_region_written(&sim.flash, 0x4F000, 1024);
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn nak_corruption_and_chatter_are_recovered() {
    let pty = Pty::open();
    let data = contents(3000, 3);
    let rig = sta_rig(&pty, &data);
    let mut sim_cfg = rig.sim();
    sim_cfg.faults = Faults {
        nak: Some(2),
        corrupt: Some(5),
        garbage_before_ack: b"[flash] write ok, Checking\r\n".to_vec(),
        ignore_reboots: 1,
        ..Faults::default()
    };
    // Longer than the handler's response timeout, so the ignored reboot does not
    // end the session.
    sim_cfg.idle = Duration::from_secs(2);
    let (outcome, sim) = tokio::join!(rig.install("2.0"), mt7681_sim::run(&pty, sim_cfg));
    assert_eq!(outcome, Outcome::Success, "{sim:?}");
    assert_eq!(sim.outcome, SimOutcome::Complete);
    assert_eq!(sim.naks, 2);
    assert_eq!(sim.region_contents().unwrap(), &data[..]);
    // The first AT#Reboot was ignored; the handler repeated it.
    assert_eq!(sim.reboots, 1);
    assert!(
        sim.received
            .windows(10)
            .filter(|w| *w == b"AT#Reboot\r")
            .count()
            >= 2
    );
}

/// The module's receiver sends nothing while it waits for the next block and gives
/// up after three silences of about 2 s (the simulator: 3 × 1 s), so a block whose
/// ACK was lost is sent again well before then, even with the default 10 s
/// `response_timeout`.
#[tokio::test]
async fn a_lost_ack_is_answered_by_a_repeat_before_the_module_gives_up() {
    let pty = Pty::open();
    let data = contents(1000, 5);
    let image = header_bin(Mt7681Region::Sta, &data);
    let rig = rig_with(
        &pty,
        Mt7681Region::Sta,
        &image,
        "1.0",
        true,
        Keys {
            response_timeout: Duration::from_secs(10),
            ..Keys::default()
        },
    );
    let mut sim_cfg = rig.sim();
    sim_cfg.faults.lose_ack = Some(3);
    let (outcome, sim) = tokio::join!(rig.install("2.0"), mt7681_sim::run(&pty, sim_cfg));
    assert_eq!(outcome, Outcome::Success, "{sim:?}");
    assert_eq!(sim.outcome, SimOutcome::Complete);
    assert_eq!(sim.duplicates, 1);
    assert_eq!(sim.region_contents().unwrap(), &data[..]);
}

/// A module whose application no longer answers (left half-written) comes back
/// only through its reset line: with `reset_command` the agent resets it into
/// recovery itself; without one, `AT#Reboot` finds no listener.
#[tokio::test]
async fn reset_command_reaches_the_recovery_firmware_of_a_dead_application() {
    let data = contents(700, 9);
    let image = header_bin(Mt7681Region::Sta, &data);

    let pty = Pty::open();
    let rig = sta_rig(&pty, &data);
    let mut sim_cfg = rig.sim();
    sim_cfg.faults.app_dead = true;
    sim_cfg.idle = Duration::from_secs(2);
    let (outcome, sim) = tokio::join!(rig.install("2.0"), mt7681_sim::run(&pty, sim_cfg));
    let Outcome::Failed(reason) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.contains("mt7681 recovery mode (AT#Reboot)"),
        "{reason}"
    );
    assert_eq!((sim.reboots, sim.resets, sim.blocks_seen), (0, 0, 0));

    let pty = Pty::open();
    let rig = rig_with(
        &pty,
        Mt7681Region::Sta,
        &image,
        "1.0",
        true,
        Keys {
            reset_script: Some("touch $DIR/reset"),
            ..Keys::default()
        },
    );
    let mut sim_cfg = rig.sim();
    sim_cfg.faults.app_dead = true;
    sim_cfg.reset_file = Some(rig.tmp.path().join("reset"));
    let (outcome, sim) = tokio::join!(rig.install("2.0"), mt7681_sim::run(&pty, sim_cfg));
    assert_eq!(outcome, Outcome::Success, "{sim:?}");
    assert_eq!((sim.reboots, sim.resets), (0, 1));
    assert_eq!(sim.region_contents().unwrap(), &data[..]);
    assert!(!sim.received.windows(10).any(|w| w == b"AT#Reboot\r"));
}

#[tokio::test]
async fn silent_module_fails_in_recovery_step_then_a_second_attempt_works() {
    let pty = Pty::open();
    let data = contents(2000, 4);
    let rig = sta_rig(&pty, &data);
    let mut sim_cfg = rig.sim();
    sim_cfg.faults.silent = true;
    sim_cfg.idle = Duration::from_secs(2);
    let (outcome, sim) = tokio::join!(rig.install("2.0"), mt7681_sim::run(&pty, sim_cfg));
    let reason = failure(&outcome);
    assert!(
        reason.contains("mt7681 recovery mode (AT#Reboot)")
            && reason.contains("no \"Recovery Mode\"")
            && reason.contains("3 attempts of 1s"),
        "{reason}"
    );
    assert_eq!(sim.outcome, SimOutcome::Silent);

    // The module answers again: a second attempt works.
    let (outcome, sim) = tokio::join!(rig.install("2.0"), mt7681_sim::run(&pty, rig.sim()));
    assert_eq!(outcome, Outcome::Success, "{sim:?}");
    assert_eq!(sim.region_contents().unwrap(), &data[..]);
}

#[tokio::test]
async fn module_silent_mid_transfer_fails_naming_the_block_then_retry_works() {
    let pty = Pty::open();
    let data = contents(2000, 5);
    let rig = sta_rig(&pty, &data);
    let sim_cfg = rig.silent_from_block(3);
    let (outcome, sim) = tokio::join!(rig.install("2.0"), mt7681_sim::run(&pty, sim_cfg));
    let reason = failure(&outcome);
    // 2000 bytes + header = 17 blocks; the third one goes unanswered.
    assert!(
        reason.contains("mt7681 xmodem block 3/17") && reason.contains("no ACK after 3 attempts"),
        "{reason}"
    );
    assert_eq!(sim.outcome, SimOutcome::Silent);
    // The handler told the module to give up.
    assert!(
        sim.received.windows(2).any(|w| w == [0x18, 0x18]),
        "no CAN CAN"
    );

    let (outcome, sim) = tokio::join!(rig.install("2.0"), mt7681_sim::run(&pty, rig.sim()));
    assert_eq!(outcome, Outcome::Success, "{sim:?}");
    assert_eq!(sim.region_contents().unwrap(), &data[..]);
}

/// A transfer cut off after the first block leaves the module half-written (only
/// its recovery firmware answers, `IoT_REC_…`): the agent records that it needs
/// a re-flash (`/status`: `needs_reflash`), and the next cycle writes the same
/// verified image again although no version rule would pick it.
#[tokio::test]
async fn a_module_left_half_written_is_flashed_again_by_the_next_cycle() {
    let pty = Pty::open();
    let data = contents(2000, 9);
    let rig = sta_rig(&pty, &data);
    let sim_cfg = rig.silent_from_block(5);
    let (outcome, sim) = tokio::join!(rig.install("2.0"), mt7681_sim::run(&pty, sim_cfg));
    failure(&outcome);
    assert_eq!(sim.outcome, SimOutcome::Silent);
    // The module reboots into its recovery firmware only.
    std::fs::write(&rig.version_file, "IoT_REC_v1.0.2\n").unwrap();
    let state = rig.engine.store().load("wifi").unwrap();
    let record = state.reflash.expect("needs re-flash");
    assert_eq!((record.version.as_str(), record.attempts), ("2.0", 0));

    let (results, sim) = tokio::join!(rig.engine.run_once(), mt7681_sim::run(&pty, rig.sim()));
    assert_eq!(results[0].outcome, Some(Outcome::Success), "{sim:?}");
    assert_eq!(results[0].version.as_deref(), Some("2.0"));
    assert_eq!(sim.region_contents().unwrap(), &data[..]);
    let state = rig.engine.store().load("wifi").unwrap();
    assert!(state.reflash.is_none(), "{state:?}");
    // Nothing more to do: the next cycle leaves the module alone.
    let results = rig.engine.run_once().await;
    assert_eq!(results[0].outcome, None);
}

/// An offer larger than the configured region can hold fails before a byte is
/// downloaded, naming the limit; the module is not touched.
#[tokio::test]
async fn an_image_larger_than_the_region_fails_before_the_download() {
    let pty = Pty::open();
    let rig = rig(&pty, Mt7681Region::Sta, b"unused", "1.0", true);
    let folder = rig.tmp.path().join("firmware/mt7681");
    std::fs::create_dir_all(&folder).unwrap();
    let too_big = header_bin(Mt7681Region::Sta, &contents(0x2_F000 + 1, 10));
    std::fs::write(folder.join("fw.bin"), &too_big).unwrap();
    std::fs::write(
        folder.join("fw.properties"),
        "version = 2.0\nimage = fw.bin\n",
    )
    .unwrap();
    let results = rig.engine.run_once().await;
    let reason = failure(results[0].outcome.as_ref().unwrap());
    assert!(reason.contains("does not fit the device"), "{reason}");
    assert!(reason.contains(&(128 + 0x2_F000).to_string()), "{reason}");
    assert_eq!(rig.engine.bytes_fetched(), 0);
    let downloads = rig.tmp.path().join("state/downloads");
    assert_eq!(std::fs::read_dir(downloads).unwrap().count(), 0);
}

// ---------------------------------------------------------------- refusals

/// With the engine's `only_newer` off (config validation forbids that for
/// mt7681, so this builds the device config directly) the handler itself
/// refuses an equal or lower version, before sending anything.
#[tokio::test]
async fn not_higher_versions_are_refused_before_anything_is_sent() {
    let pty = Pty::open();
    let data = contents(500, 6);
    let rig = rig(
        &pty,
        Mt7681Region::Sta,
        &header_bin(Mt7681Region::Sta, &data),
        "1.5",
        false,
    );
    for target in ["1.5", "1.4", "1.05"] {
        let reason = failure(&rig.install(target).await);
        assert!(
            reason.contains("mt7681 version check")
                && reason.contains(&format!("refusing version {target}"))
                && reason.contains("only upgrades to a higher version"),
            "{reason}"
        );
    }
    // An image installed without a version is refused too.
    let outcome = rig
        .engine
        .install(
            "wifi",
            FirmwareLocation::File(rig.image.clone()),
            None,
            vec![],
        )
        .await
        .unwrap();
    let reason = failure(&outcome);
    assert!(reason.contains("version is unknown"), "{reason}");
    assert!(
        pty.drain(Duration::from_millis(300)).await.is_empty(),
        "the module saw bytes"
    );
}

#[tokio::test]
async fn image_for_another_region_is_refused_before_anything_is_sent() {
    let pty = Pty::open();
    let rig = rig(
        &pty,
        Mt7681Region::Sta,
        &header_bin(Mt7681Region::Loader, &contents(500, 7)),
        "1.0",
        true,
    );
    let reason = failure(&rig.install("2.0").await);
    assert!(
        reason.contains("mt7681 image") && reason.contains("region type is 1"),
        "{reason}"
    );
    // A raw binary without the upgrade header.
    std::fs::write(&rig.image, contents(500, 8)).unwrap();
    let reason = failure(&rig.install("2.0").await);
    assert!(reason.contains("no MT7681 upgrade header"), "{reason}");
    assert!(pty.drain(Duration::from_millis(300)).await.is_empty());
    drop(rig.tmp);
}

// ---------------------------------------------------------------- the binary

/// `fota-agent install --device wifi IMAGE --version 2.0` with
/// `handler = "mt7681"` against the simulated module; its version command reads
/// the file the simulator rewrites once the upgrade completed.
#[tokio::test]
async fn agent_binary_installs_to_the_simulated_module() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("firmware")).unwrap();
    let data = contents(4000, 9);
    let image_path = dir.join("MT7681_sta_header.bin");
    std::fs::write(&image_path, header_bin(Mt7681Region::Sta, &data)).unwrap();
    let version_file = dir.join("version");
    std::fs::write(&version_file, "1.0\n").unwrap();
    let script = dir.join("version.sh");
    process::write_exec(&script, &format!("cat '{}'", version_file.display()));
    let pty = Pty::open();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = {state:?}\nupdate_timeout = \"2m\"\n\
             [source]\nkind = \"directory\"\npath = {fw:?}\n\
             [[device]]\nid = \"wifi\"\ntype = \"mt7681\"\nhandler = \"mt7681\"\n\
             port = {port:?}\nregion = \"sta\"\n\
             response_timeout = \"2s\"\nretries = 5\n\
             version_command = [{version:?}]\n",
            state = dir.join("state").display().to_string(),
            fw = dir.join("firmware").display().to_string(),
            port = pty.slave_path.display().to_string(),
            version = script.display().to_string(),
        ),
    )
    .unwrap();
    let mut sim_cfg = SimConfig::new();
    sim_cfg.version_file = Some(version_file.clone());
    sim_cfg.idle = Duration::from_secs(5);
    let agent = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_fota-agent"))
            .env("RUST_LOG", "info")
            .env_remove("FOTA_AGENT_CONFIG")
            .arg("--config")
            .arg(&config)
            .args(["install", "--device", "wifi"])
            .arg(&image_path)
            .args(["--version", "2.0"])
            .stdin(std::process::Stdio::null())
            .output(),
    );
    let (out, sim) = tokio::join!(agent, mt7681_sim::run(&pty, sim_cfg));
    let out = out.expect("fota-agent install hung").unwrap();
    let log = format!(
        "{}{}\nsim: {:?} header {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sim.outcome,
        sim.header
    );
    assert!(out.status.success(), "{log}");
    assert!(log.contains("wifi: success"), "{log}");
    assert_eq!(sim.outcome, SimOutcome::Complete, "{log}");
    assert_eq!(sim.region_contents().unwrap(), &data[..], "{log}");
}

/// Writes `bytes` to the module's serial line and reads until `want` arrives
/// (bounded: the module's own timeouts end the session first).
fn exchange(port: &mut std::fs::File, bytes: &[u8], want: &[u8]) -> Vec<u8> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    port.write_all(bytes).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while !got.windows(want.len()).any(|w| w == want) {
        assert!(Instant::now() < deadline, "no {want:?} in {got:?}");
        let mut fds = [PollFd::new(port.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16)).unwrap() > 0 {
            let mut b = [0u8; 256];
            let n = port.read(&mut b).unwrap();
            got.extend_from_slice(&b[..n]);
        }
    }
    got
}

/// One 128-byte XMODEM-CRC block.
fn block(number: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = data.to_vec();
    payload.resize(128, 0x1A);
    let mut v = vec![mt7681_sim::SOH, number, !number];
    v.extend_from_slice(&payload);
    v.extend_from_slice(&mt7681_sim::crc16(&payload).to_be_bytes());
    v
}

/// The simulated module is as strict as the SDK: an EOT before the header's
/// length of contents arrived boots nothing new, so an agent that stopped early
/// could not pass for one that installed.
#[tokio::test]
async fn the_simulator_boots_nothing_new_after_a_short_transfer() {
    let pty = Pty::open();
    let dir = tempfile::tempdir().unwrap();
    let version_file = dir.path().join("version");
    std::fs::write(&version_file, "1.0\n").unwrap();
    let mut cfg = SimConfig::new();
    cfg.version_file = Some(version_file.clone());
    let path = pty.slave_path.clone();
    let sender = tokio::task::spawn_blocking(move || {
        let mut port = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        exchange(&mut port, b"AT#Reboot\r\n", b"Recovery Mode");
        exchange(&mut port, b"AT#UpdateFW\r\n", b"C");
        let header = encode_header(Mt7681Region::Sta, 300);
        exchange(&mut port, &block(1, &header), &[mt7681_sim::ACK]);
        exchange(&mut port, &block(2, &contents(128, 3)), &[mt7681_sim::ACK]);
        exchange(&mut port, &[mt7681_sim::EOT], &[mt7681_sim::ACK]);
    });
    let sim = mt7681_sim::run(&pty, cfg).await;
    sender.await.unwrap();
    assert_eq!(sim.header, Some((4, 300)));
    assert_eq!(sim.written, 128);
    assert!(
        matches!(sim.outcome, SimOutcome::Incomplete(_)),
        "{:?}",
        sim.outcome
    );
    assert_eq!(std::fs::read_to_string(&version_file).unwrap(), "1.0\n");
}
