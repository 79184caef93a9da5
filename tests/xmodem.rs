//! The xmodem handler over a pty: against the simulated bootloader in
//! `xmodem_sim` (modes and faults) and against Debian's lrzsz (`rx`, `rb`) as an
//! independent receiver, through the engine and through the `fota-agent` binary.
//!
//! lrzsz must be installed (`.ci/run` does it); without it the lrzsz tests fail
//! and say so.

mod common;
mod process;
mod xmodem_sim;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_transfer_progress, failure};
use fota_agent::config::{
    AgentConfig, DeviceConfig, HandlerConfig, SerialConfig, XmodemConfig, XmodemProtocol,
};
use fota_agent::engine::Engine;
use fota_agent::handler::UpdateHandler;
use fota_agent::handler::xmodem::XmodemHandler;
use fota_agent::model::{FirmwareLocation, UpdatePolicy};
use fota_agent::progress::{Outcome, ProgressEvent, ProgressKind, ProgressStep};
use fota_agent::source::directory::DirectorySource;
use fota_agent::version::VersionScheme;
use tokio::sync::broadcast;
use xmodem_sim::{Faults, Mode, Pty, SimConfig, SimOutcome, lrzsz};

const CPMEOF: u8 = 0x1A;

/// Deterministic bytes that are not all alike (and include control characters).
fn image(len: usize, seed: u32) -> Vec<u8> {
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

fn xcfg(pty: &Pty, protocol: XmodemProtocol, timeout: Duration, retries: u32) -> XmodemConfig {
    XmodemConfig {
        serial: SerialConfig {
            port: pty.slave_path.clone(),
            baud: 115_200,
        },
        protocol,
        enter_command: None,
        response_timeout: timeout,
        retries,
        version_command: None,
        command_timeout: Duration::from_secs(10),
    }
}

struct Rig {
    _tmp: tempfile::TempDir,
    engine: Engine,
    image: PathBuf,
    events: broadcast::Receiver<ProgressEvent>,
}

/// An engine with one xmodem device "mcu" and `data` written to `fw-2.0.bin`.
fn rig(cfg: XmodemConfig, data: &[u8]) -> Rig {
    // The handler's log, shown for failing tests.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("fota_agent=debug")
        .try_init();
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("fw-2.0.bin");
    std::fs::write(&image, data).unwrap();
    std::fs::create_dir_all(tmp.path().join("firmware")).unwrap();
    let device = DeviceConfig {
        id: "mcu".into(),
        device_type: "stm".into(),
        policy: UpdatePolicy::Immediate,
        version_scheme: VersionScheme::Esh,
        only_newer: true,
        group: None,
        lock: None,
        handler: HandlerConfig::Xmodem(cfg.clone()),
    };
    let handler = Arc::new(XmodemHandler::new("mcu", "stm", &cfg));
    let engine = Engine::new(
        AgentConfig {
            state_dir: tmp.path().join("state"),
            poll_interval: Duration::from_secs(3600),
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
        _tmp: tmp,
        engine,
        image,
        events,
    }
}

impl Rig {
    async fn install(&self) -> Outcome {
        self.engine
            .install(
                "mcu",
                FirmwareLocation::File(self.image.clone()),
                None,
                vec![],
            )
            .await
            .unwrap()
    }

    fn kinds(&mut self) -> Vec<ProgressKind> {
        std::iter::from_fn(|| self.events.try_recv().ok())
            .map(|e| e.kind)
            .collect()
    }
}

/// The file as XMODEM delivers it: padded with 0x1A to whole blocks.
fn assert_padded(received: &[u8], data: &[u8], block: usize) {
    assert_eq!(&received[..data.len()], data);
    assert!(
        received[data.len()..].iter().all(|&b| b == CPMEOF),
        "padding is not 0x1A"
    );
    assert!(received.len() - data.len() < block, "{}", received.len());
    assert_eq!(received.len() % 128, 0);
}

// ---------------------------------------------------------------- simulator

#[tokio::test]
async fn xmodem_crc_to_the_simulator() {
    let pty = Pty::open();
    let data = image(1000, 1);
    let mut rig = rig(
        xcfg(&pty, XmodemProtocol::Xmodem, Duration::from_secs(2), 5),
        &data,
    );
    let (outcome, sim) = tokio::join!(
        rig.install(),
        xmodem_sim::receive(&pty, SimConfig::new(Mode::Xmodem))
    );
    assert_eq!(outcome, Outcome::Success, "{sim:?}");
    assert_eq!(sim.outcome, SimOutcome::Complete);
    assert_padded(&sim.data, &data, 128);
    assert_eq!(sim.block_sizes, vec![128; 8]);
    assert_eq!(sim.duplicates, 0);
    assert!(!sim.saw_can_can());
    assert_transfer_progress(&rig.kinds(), 2);
}

#[tokio::test]
async fn xmodem_checksum_when_the_receiver_starts_with_nak() {
    let pty = Pty::open();
    let data = image(700, 2);
    let mut rig = rig(
        xcfg(&pty, XmodemProtocol::Xmodem, Duration::from_secs(2), 5),
        &data,
    );
    let mut sim_cfg = SimConfig::new(Mode::Xmodem);
    sim_cfg.crc = false;
    let (outcome, sim) = tokio::join!(rig.install(), xmodem_sim::receive(&pty, sim_cfg));
    assert_eq!(outcome, Outcome::Success, "{sim:?}");
    assert_padded(&sim.data, &data, 128);
    assert_transfer_progress(&rig.kinds(), 2);
}

#[tokio::test]
async fn xmodem_1k_uses_1024_byte_blocks_and_128_for_a_short_tail() {
    let pty = Pty::open();
    let data = image(4096 + 300, 3);
    let mut rig = rig(
        xcfg(&pty, XmodemProtocol::Xmodem1k, Duration::from_secs(2), 5),
        &data,
    );
    let (outcome, sim) = tokio::join!(
        rig.install(),
        xmodem_sim::receive(&pty, SimConfig::new(Mode::Xmodem))
    );
    assert_eq!(outcome, Outcome::Success, "{sim:?}");
    assert_eq!(sim.block_sizes, vec![1024, 1024, 1024, 1024, 128, 128, 128]);
    assert_padded(&sim.data, &data, 128);
    assert_transfer_progress(&rig.kinds(), 2);
}

#[tokio::test]
async fn xmodem_1k_refuses_a_checksum_only_receiver() {
    let pty = Pty::open();
    let rig = rig(
        xcfg(
            &pty,
            XmodemProtocol::Xmodem1k,
            Duration::from_millis(200),
            2,
        ),
        &image(100, 4),
    );
    let mut sim_cfg = SimConfig::new(Mode::Xmodem);
    sim_cfg.crc = false;
    sim_cfg.start_attempts = 8;
    let (outcome, _sim) = tokio::join!(rig.install(), xmodem_sim::receive(&pty, sim_cfg));
    let reason = failure(&outcome);
    assert!(reason.contains("xmodem-1k start: no 'C'"), "{reason}");
    assert!(reason.contains("checksum mode"), "{reason}");
}

#[tokio::test]
async fn ymodem_sends_name_and_exact_size() {
    let pty = Pty::open();
    let data = image(3000, 5);
    let mut rig = rig(
        xcfg(&pty, XmodemProtocol::Ymodem, Duration::from_secs(2), 5),
        &data,
    );
    let (outcome, sim) = tokio::join!(
        rig.install(),
        xmodem_sim::receive(&pty, SimConfig::new(Mode::Ymodem))
    );
    assert_eq!(outcome, Outcome::Success, "{sim:?}");
    assert_eq!(sim.outcome, SimOutcome::Complete);
    assert_eq!(sim.name.as_deref(), Some("fw-2.0.bin"));
    assert_eq!(sim.size, Some(3000));
    assert_eq!(sim.data, data);
    assert_eq!(sim.eots, 2, "EOT, NAK, EOT, ACK");
    assert_transfer_progress(&rig.kinds(), 2);
}

/// Every injected fault is recovered from: a NAK, a lost ACK (the repeat is a
/// duplicate the receiver ACKs without storing), a corrupted block, and noise
/// before ACKs; block numbers wrap past 255.
#[tokio::test]
async fn recovers_from_nak_lost_ack_corruption_and_noise() {
    let pty = Pty::open();
    let data = image(300 * 128 + 5, 6); // 301 blocks: numbers wrap
    let mut rig = rig(
        xcfg(&pty, XmodemProtocol::Xmodem, Duration::from_millis(300), 5),
        &data,
    );
    let mut sim_cfg = SimConfig::new(Mode::Xmodem);
    sim_cfg.faults = Faults {
        nak: Some(3),
        drop_ack: Some(7),
        corrupt: Some(260),
        garbage_before_ack: b"\x00\xffC\x18x".to_vec(),
        ..Faults::default()
    };
    let (outcome, sim) = tokio::join!(rig.install(), xmodem_sim::receive(&pty, sim_cfg));
    assert_eq!(outcome, Outcome::Success, "{sim:?}");
    assert_eq!(sim.duplicates, 1);
    assert_eq!(sim.blocks_seen, 301 + 3);
    assert_padded(&sim.data, &data, 128);
    assert_transfer_progress(&rig.kinds(), 2);
}

#[tokio::test]
async fn ymodem_recovers_from_faults_too() {
    let pty = Pty::open();
    let data = image(10_000, 7);
    let rig = rig(
        xcfg(&pty, XmodemProtocol::Ymodem, Duration::from_millis(300), 5),
        &data,
    );
    let mut sim_cfg = SimConfig::new(Mode::Ymodem);
    sim_cfg.faults = Faults {
        nak: Some(2),
        drop_ack: Some(4),
        corrupt: Some(6),
        ..Faults::default()
    };
    let (outcome, sim) = tokio::join!(rig.install(), xmodem_sim::receive(&pty, sim_cfg));
    assert_eq!(outcome, Outcome::Success, "{sim:?}");
    assert_eq!(sim.data, data);
    assert_eq!(sim.duplicates, 1);
}

#[tokio::test]
async fn receiver_cancel_fails_with_the_step() {
    let pty = Pty::open();
    let rig = rig(
        xcfg(&pty, XmodemProtocol::Xmodem, Duration::from_secs(2), 5),
        &image(1280, 8),
    );
    let mut sim_cfg = SimConfig::new(Mode::Xmodem);
    sim_cfg.faults.cancel = Some(4);
    let (outcome, sim) = tokio::join!(rig.install(), xmodem_sim::receive(&pty, sim_cfg));
    let reason = failure(&outcome);
    assert_eq!(reason, "xmodem block 4/10: receiver canceled", "{sim:?}");
}

/// A receiver that stops answering fails the update within
/// response_timeout × retries (plus slack), naming the block; the handler sends
/// CAN CAN so the bootloader starts over, and a second attempt then works.
#[tokio::test]
async fn silent_receiver_fails_in_time_and_the_next_attempt_works() {
    let pty = Pty::open();
    let data = image(80 * 128, 9);
    let mut rig = rig(
        xcfg(&pty, XmodemProtocol::Xmodem, Duration::from_millis(200), 3),
        &data,
    );
    let mut sim_cfg = SimConfig::new(Mode::Xmodem);
    sim_cfg.faults.silent = Some(12);
    let (outcome, sim) = tokio::join!(rig.install(), xmodem_sim::receive(&pty, sim_cfg));
    let reason = failure(&outcome);
    assert!(
        reason.starts_with("xmodem block 12/80: no ACK after 3 attempts"),
        "{reason}"
    );
    assert_eq!(sim.outcome, SimOutcome::Silent);
    // In time: the block went out 3 times in all (2 after the first), no more.
    let resent = sim
        .trailing
        .windows(3)
        .filter(|w| *w == [xmodem_sim::SOH, 12, !12u8])
        .count();
    assert_eq!(resent, 2, "{:?}", sim.trailing);
    assert!(
        sim.saw_can_can(),
        "no CAN CAN after the failure: {:?}",
        sim.trailing
    );
    let kinds = rig.kinds();
    assert!(
        kinds.contains(&ProgressKind::Percent(ProgressStep::Transferring, 13)),
        "{kinds:?}"
    );
    assert!(
        !kinds.contains(&ProgressKind::Step(ProgressStep::Updating)),
        "{kinds:?}"
    );

    let (outcome, sim) = tokio::join!(
        rig.install(),
        xmodem_sim::receive(&pty, SimConfig::new(Mode::Xmodem))
    );
    assert_eq!(outcome, Outcome::Success, "{sim:?}");
    assert_padded(&sim.data, &data, 128);
}

/// On tokio's paused clock: the 3 × 200 ms the handler waits are virtual time,
/// so the bound holds on a loaded machine and still catches a handler that waits
/// longer (or forever).
#[tokio::test(start_paused = true)]
async fn no_receiver_fails_at_the_start_in_time() {
    let pty = Pty::open();
    let rig = rig(
        xcfg(&pty, XmodemProtocol::Ymodem, Duration::from_millis(200), 3),
        &image(10, 10),
    );
    let started = tokio::time::Instant::now();
    let outcome = rig.install().await;
    let reason = failure(&outcome);
    assert!(
        reason.starts_with("ymodem start: no 'C' from the receiver after 3 attempts of 200ms"),
        "{reason}"
    );
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(2), "{waited:?} (virtual)");
}

/// The enter command goes out first; the bootloader's banner (with a 'C' in
/// "Checking") is not taken for its start request.
#[tokio::test]
async fn enter_command_is_sent_before_the_start() {
    let pty = Pty::open();
    let data = image(500, 11);
    let mut cfg = xcfg(&pty, XmodemProtocol::Xmodem, Duration::from_secs(2), 5);
    cfg.enter_command = Some("update\r".into());
    let mut rig = rig(cfg, &data);
    let mut sim_cfg = SimConfig::new(Mode::Xmodem);
    sim_cfg.enter_command = Some(b"update\r".to_vec());
    sim_cfg.banner = b"update\r\nChecking flash... ok\r\nBootloader 1.2 ready\r\n".to_vec();
    let (outcome, sim) = tokio::join!(rig.install(), xmodem_sim::receive(&pty, sim_cfg));
    assert_eq!(outcome, Outcome::Success, "{sim:?}");
    assert!(sim.saw_enter_command);
    assert_eq!(sim.duplicates, 0);
    assert_padded(&sim.data, &data, 128);
    assert_transfer_progress(&rig.kinds(), 2);
}

/// Waits for the first progress event `pick` accepts.
async fn first_event(
    events: &mut broadcast::Receiver<ProgressEvent>,
    pick: impl Fn(&ProgressKind) -> bool,
) {
    loop {
        match events.recv().await {
            Ok(e) if pick(&e.kind) => return,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// A cancel after the first data block (the commit point: the bootloader writes
/// flash from it on) is too late: the transfer goes on and the update succeeds.
#[tokio::test]
async fn cancel_after_the_first_block_is_too_late_and_the_update_finishes() {
    let pty = Pty::open();
    let data = image(40 * 128, 12);
    let mut rig = rig(
        xcfg(&pty, XmodemProtocol::Xmodem, Duration::from_secs(5), 5),
        &data,
    );
    let mut events = rig.engine.subscribe();
    let canceler = async {
        first_event(
            &mut events,
            |k| matches!(k, ProgressKind::Percent(ProgressStep::Transferring, p) if *p > 0),
        )
        .await;
        rig.engine.cancel("mcu")
    };
    let sim_cfg = SimConfig::new(Mode::Xmodem);
    let (outcome, sim, answer) =
        tokio::join!(rig.install(), xmodem_sim::receive(&pty, sim_cfg), canceler);
    assert_eq!(answer, fota_agent::source::CancelOutcome::TooLate);
    assert_eq!(outcome, Outcome::Success);
    assert_eq!(sim.outcome, SimOutcome::Complete);
    assert_padded(&sim.data, &data, 128);
    let _ = rig.kinds();
}

/// A cancel while the handler waits for the bootloader (TRANSFERRING, no block
/// sent yet) cancels: no block reaches the device, and the bootloader is told
/// to give up.
#[tokio::test]
async fn cancel_before_the_first_block_cancels_and_nothing_is_written() {
    let pty = Pty::open();
    let rig = rig(
        xcfg(&pty, XmodemProtocol::Xmodem, Duration::from_secs(5), 5),
        &image(40 * 128, 13),
    );
    let mut events = rig.engine.subscribe();
    // No receiver yet: the handler waits for the start signal.
    let canceler = async {
        first_event(&mut events, |k| {
            matches!(k, ProgressKind::Step(ProgressStep::Transferring))
        })
        .await;
        rig.engine.cancel("mcu")
    };
    let (outcome, answer) = tokio::join!(rig.install(), canceler);
    assert_eq!(answer, fota_agent::source::CancelOutcome::Canceled);
    assert_eq!(outcome, Outcome::Canceled);
    // A receiver started now gets no data block.
    let mut sim_cfg = SimConfig::new(Mode::Xmodem);
    sim_cfg.start_attempts = 3;
    let sim = xmodem_sim::receive(&pty, sim_cfg).await;
    assert!(sim.data.is_empty() && sim.blocks_seen == 0, "{sim:?}");
    assert_ne!(sim.outcome, SimOutcome::Complete);
    let state = rig.engine.store().load("mcu").unwrap();
    assert!(state.in_flight.is_none(), "{state:?}");
}

/// Whatever the device sends, the handler ends (success or failure) without
/// panicking, within its deadlines.
#[tokio::test]
async fn noise_from_the_device_never_panics() {
    for seed in 0..4u32 {
        let pty = Pty::open();
        let rig = rig(
            xcfg(&pty, XmodemProtocol::Ymodem, Duration::from_millis(100), 3),
            &image(2000, seed),
        );
        let noise = async {
            let mut i = 0;
            loop {
                let chunk = image(1 + (i * 7 + seed as usize) % 40, seed * 1000 + i as u32);
                let _ = pty.write_all(&chunk).await;
                let _ = pty.drain(Duration::from_millis(5)).await;
                i += 1;
            }
        };
        let outcome = tokio::select! {
            o = rig.install() => o,
            () = noise => unreachable!(),
        };
        assert!(
            matches!(outcome, Outcome::Success | Outcome::Failed(_)),
            "{outcome:?}"
        );
    }
}

// ---------------------------------------------------------------- lrzsz

async fn with_lrzsz(
    protocol: XmodemProtocol,
    program: &str,
    args: &[&str],
    data: &[u8],
) -> (Outcome, tempfile::TempDir, String) {
    lrzsz::require(program);
    let pty = Arc::new(Pty::open());
    let recv = tempfile::tempdir().unwrap();
    let mut rig = rig(xcfg(&pty, protocol, Duration::from_secs(3), 5), data);
    let receiver = lrzsz::Receiver::spawn(pty.clone(), program, args, recv.path());
    let outcome = rig.install().await;
    let (status, stderr) = receiver.finish(Duration::from_secs(20)).await;
    let log = format!("{program} {args:?}: {status:?}\n{stderr}");
    if outcome == Outcome::Success {
        assert!(status.is_some_and(|s| s.success()), "{log}");
        assert_transfer_progress(&rig.kinds(), 2);
    }
    (outcome, recv, log)
}

fn received(dir: &Path, name: &str, log: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}\n{log}"))
}

#[tokio::test]
async fn lrzsz_rx_xmodem_crc() {
    let data = image(5000, 20);
    let (outcome, dir, log) = with_lrzsz(
        XmodemProtocol::Xmodem,
        "rx",
        &[
            "-c",
            "-b",
            "-q",
            "-t",
            "10",
            "--delay-startup",
            "1",
            "out.bin",
        ],
        &data,
    )
    .await;
    assert_eq!(outcome, Outcome::Success, "{log}");
    assert_padded(&received(dir.path(), "out.bin", &log), &data, 128);
}

#[tokio::test]
async fn lrzsz_rx_xmodem_checksum() {
    let data = image(1234, 21);
    let (outcome, dir, log) = with_lrzsz(
        XmodemProtocol::Xmodem,
        "rx",
        &["-b", "-q", "-t", "10", "--delay-startup", "1", "out.bin"],
        &data,
    )
    .await;
    assert_eq!(outcome, Outcome::Success, "{log}");
    assert_padded(&received(dir.path(), "out.bin", &log), &data, 128);
}

#[tokio::test]
async fn lrzsz_rx_xmodem_1k() {
    let data = image(3 * 1024 + 1000, 22);
    let (outcome, dir, log) = with_lrzsz(
        XmodemProtocol::Xmodem1k,
        "rx",
        &[
            "-c",
            "-b",
            "-q",
            "-t",
            "10",
            "--delay-startup",
            "1",
            "out.bin",
        ],
        &data,
    )
    .await;
    assert_eq!(outcome, Outcome::Success, "{log}");
    assert_padded(&received(dir.path(), "out.bin", &log), &data, 1024);
}

#[tokio::test]
async fn lrzsz_rb_ymodem() {
    let data = image(20_000 + 77, 23);
    let (outcome, dir, log) = with_lrzsz(
        XmodemProtocol::Ymodem,
        "rb",
        &["-b", "-q", "-t", "10", "--delay-startup", "1", "-y"],
        &data,
    )
    .await;
    assert_eq!(outcome, Outcome::Success, "{log}");
    assert_eq!(received(dir.path(), "fw-2.0.bin", &log), data, "{log}");
}

/// lrzsz's own error injection (`--errors N`: a CRC error every N bytes) makes it
/// NAK blocks; the handler repeats them.
#[tokio::test]
async fn lrzsz_rb_ymodem_with_crc_errors() {
    let data = image(8 * 1024, 24);
    let (outcome, dir, log) = with_lrzsz(
        XmodemProtocol::Ymodem,
        "rb",
        &[
            "-b",
            "-q",
            "-t",
            "10",
            "--delay-startup",
            "1",
            "-y",
            "--errors",
            "3000",
        ],
        &data,
    )
    .await;
    assert_eq!(outcome, Outcome::Success, "{log}");
    assert_eq!(received(dir.path(), "fw-2.0.bin", &log), data, "{log}");
}

// ---------------------------------------------------------------- the binary

/// `fota-agent install --device mcu IMAGE --version 2.0` with `handler = "xmodem"`
/// (YMODEM) on a pty, lrzsz's `rb` as the bootloader; the device's version command
/// reports 2.0 once `rb` holds an exact copy of the image.
#[tokio::test]
async fn agent_binary_installs_over_ymodem_to_lrzsz() {
    lrzsz::require("rb");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let recv = dir.join("recv");
    std::fs::create_dir_all(&recv).unwrap();
    std::fs::create_dir_all(dir.join("firmware")).unwrap();
    let data = image(6000, 30);
    let image_path = dir.join("fw-2.0.bin");
    std::fs::write(&image_path, &data).unwrap();
    let version = dir.join("version.sh");
    process::write_exec(
        &version,
        &format!(
            "if cmp -s '{}' '{}'; then echo 2.0; else echo 1.0; fi\n",
            recv.join("fw-2.0.bin").display(),
            image_path.display()
        ),
    );
    let pty = Arc::new(Pty::open());
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = {state:?}\nupdate_timeout = \"2m\"\n\
             [source]\nkind = \"directory\"\npath = {fw:?}\n\
             [[device]]\nid = \"mcu\"\ntype = \"stm\"\nhandler = \"xmodem\"\n\
             port = {port:?}\nbaud = 115200\nprotocol = \"ymodem\"\n\
             response_timeout = \"3s\"\nretries = 10\n\
             version_command = [{version:?}]\n",
            state = dir.join("state").display().to_string(),
            fw = dir.join("firmware").display().to_string(),
            port = pty.slave_path.display().to_string(),
            version = version.display().to_string(),
        ),
    )
    .unwrap();
    let receiver = lrzsz::Receiver::spawn(
        pty.clone(),
        "rb",
        &["-b", "-q", "-t", "10", "--delay-startup", "1", "-y"],
        &recv,
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_fota-agent"))
            .env("RUST_LOG", "info")
            .env_remove("FOTA_AGENT_CONFIG")
            .arg("--config")
            .arg(&config)
            .args(["install", "--device", "mcu"])
            .arg(&image_path)
            .args(["--version", "2.0"])
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("fota-agent install hung")
    .unwrap();
    let (status, stderr) = receiver.finish(Duration::from_secs(10)).await;
    let log = format!(
        "{}{}\nrb: {status:?} {stderr}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    assert!(log.contains("firmware sent"), "{log}");
    assert!(log.contains("mcu: success"), "{log}");
    assert_eq!(
        std::fs::read(recv.join("fw-2.0.bin")).unwrap(),
        data,
        "{log}"
    );
    assert!(status.is_some_and(|s| s.success()), "{log}");
}
