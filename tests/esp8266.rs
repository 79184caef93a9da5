//! The esp8266 handler against a simulated ESP8266 ROM bootloader on real ptys:
//! faithfulness to esptool, progress, injected faults, image refusal, the
//! `fota-agent install` binary end to end, and eight devices at once.

mod common;
#[path = "esp8266_sim/mod.rs"]
mod esp8266_sim;
mod process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use esp8266_sim::{Faults, SimConfig, Simulator};
use fota_agent::config::{DeviceConfig, Esp8266Config, EspReset, HandlerConfig, SerialConfig};
use fota_agent::engine::Engine;
use fota_agent::handler::UpdateHandler;
use fota_agent::handler::esp8266::{Esp8266Handler, Timeouts, image};
use fota_agent::model::{FirmwareLocation, UpdatePolicy};
use fota_agent::progress::{Outcome, ProgressKind, ProgressStep};
use fota_agent::source::directory::DirectorySource;
use fota_agent::version::VersionScheme;

/// Deterministic bytes that include plenty of SLIP specials (0xC0, 0xDB).
fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A valid application image of about `size` bytes carrying `FWVER=<version>`
/// (what the simulated application "reports" through its version command).
fn app_image(version: &str, size: usize) -> Vec<u8> {
    let mut iram = format!("FWVER={version}\n").into_bytes();
    iram.extend(noise(7, 3000));
    let dram = noise(11, 1201);
    let mut img = image::build(0x4010_0004, &[(0x4010_0000, &iram), (0x3FFE_8000, &dram)]);
    let rest = size.saturating_sub(img.len());
    img.extend(noise(13, rest));
    img
}

fn esp_device(
    id: &str,
    port: &Path,
    offset: u32,
    version_command: Option<Vec<String>>,
) -> DeviceConfig {
    DeviceConfig {
        id: id.into(),
        device_type: "esp".into(),
        policy: UpdatePolicy::Immediate,
        version_scheme: VersionScheme::Esh,
        only_newer: true,
        group: None,
        lock: None,
        handler: HandlerConfig::Esp8266(esp_config(port, offset, version_command)),
    }
}

fn esp_config(port: &Path, offset: u32, version_command: Option<Vec<String>>) -> Esp8266Config {
    Esp8266Config {
        serial: SerialConfig {
            port: port.to_path_buf(),
            baud: 115_200,
        },
        flash_offset: offset,
        reset: EspReset::None,
        version_command,
        command_timeout: Duration::from_secs(10),
    }
}

fn engine(
    state: &Path,
    firmware: &Path,
    devices: Vec<(DeviceConfig, Arc<dyn UpdateHandler>)>,
    max: usize,
) -> Engine {
    let mut agent = common::agent_config(state);
    agent.max_concurrent_updates = max;
    Engine::new(
        agent,
        &fota_agent::download::DownloadConfig::default(),
        Box::new(DirectorySource::new(firmware)),
        devices,
    )
    .unwrap()
}

struct Run {
    outcome: Outcome,
    events: Vec<ProgressKind>,
}

/// `engine.install` of `image` on one device behind `sim` with `handler`. The
/// engine allows an update 30 minutes: one still running after 2 means the
/// handler's own per-step deadlines (seconds) did not end it.
async fn install_with(sim: &Simulator, image: &[u8], handler: Esp8266Handler, offset: u32) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("image.bin");
    std::fs::write(&path, image).unwrap();
    let device = esp_device("esp1", sim.path(), offset, None);
    let engine = engine(
        &tmp.path().join("state"),
        tmp.path(),
        vec![(device, Arc::new(handler))],
        1,
    );
    let mut rx = engine.subscribe();
    let outcome = tokio::time::timeout(
        Duration::from_secs(120),
        engine.install("esp1", FirmwareLocation::File(path.clone()), None, vec![]),
    )
    .await
    .expect("the handler's per-step deadlines did not end the update")
    .unwrap();
    Run {
        outcome,
        events: common::drain(&mut rx),
    }
}

async fn install(sim: &Simulator, image: &[u8], offset: u32) -> Run {
    let handler = Esp8266Handler::new("esp1", "esp", &esp_config(sim.path(), offset, None));
    install_with(sim, image, handler, offset).await
}

fn failure(run: &Run) -> &str {
    match &run.outcome {
        Outcome::Failed(reason) => reason,
        other => panic!("expected a failure, got {other}: {:?}", run.events),
    }
}

fn assert_flashed(sim: &Simulator, image: &[u8], offset: usize) {
    let flash = sim.flash();
    assert!(
        flash[offset..offset + image.len()] == *image,
        "flash at {offset:#x} differs from the image"
    );
}

/// esptool from PyPI, as `.ci/run` installs it.
fn esptool() -> Command {
    for (program, args) in [("esptool", &[][..]), ("python3", &["-m", "esptool"][..])] {
        let ok = Command::new(program)
            .args(args)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            let mut c = Command::new(program);
            c.args(args);
            return c;
        }
    }
    panic!(
        "esptool is not installed: run .ci/run (it installs esptool 5.x from PyPI with \
         `python3 -m pip install esptool`); this test needs the real esptool"
    );
}

/// Case 1: The real esptool (`--no-stub`, the ROM protocol) and the handler write the
/// same bytes into the same simulated flash, starting from the same non-erased
/// content, so the erase-size correction is compared as well.
#[tokio::test(flavor = "multi_thread")]
async fn esptool_and_the_handler_write_identical_flash() {
    let img = app_image("2.0", 50_000);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("image.bin");
    std::fs::write(&path, &img).unwrap();
    let garbage = noise(99, 512 * 1024);
    for offset in [0x0usize, 0x3000] {
        let config = || SimConfig {
            initial_flash: garbage.clone(),
            ..SimConfig::default()
        };
        let by_esptool = Simulator::start(config()).unwrap();
        let out = tokio::task::spawn_blocking({
            let port = by_esptool.path().to_path_buf();
            let path = path.clone();
            move || {
                esptool()
                    .args(["--chip", "esp8266", "--port"])
                    .arg(&port)
                    .args([
                        "--baud", "115200", "--before", "no-reset", "--after", "no-reset",
                    ])
                    .args(["--no-stub", "write-flash"])
                    .arg(format!("{offset:#x}"))
                    .arg(&path)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "esptool failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_flashed(&by_esptool, &img, offset);

        let by_agent = Simulator::start(config()).unwrap();
        let run = install(&by_agent, &img, offset as u32).await;
        assert_eq!(run.outcome, Outcome::Success, "{:?}", run.events);
        assert!(
            by_agent.flash() == by_esptool.flash(),
            "offset {offset:#x}: flash written by the handler differs from esptool's"
        );
        assert_eq!(by_agent.stats().erased, by_esptool.stats().erased);
    }
}

/// Case 2: TRANSFERRING with rising percent per block, then UPDATING, and the image at
/// `flash_offset`.
#[tokio::test(flavor = "multi_thread")]
async fn progress_goes_transferring_then_updating_and_the_image_lands_at_flash_offset() {
    let sim = Simulator::start(SimConfig::default()).unwrap();
    let img = app_image("2.0", 20_000);
    let run = install(&sim, &img, 0x10000).await;
    assert_eq!(run.outcome, Outcome::Success, "{:?}", run.events);
    assert_flashed(&sim, &img, 0x10000);
    assert!(
        sim.flash()[..0x10000].iter().all(|&b| b == 0xFF),
        "wrote outside the image"
    );
    assert_eq!(
        sim.stats().flash_end,
        vec![0],
        "FLASH_END asks for a reboot"
    );

    let mut percents = vec![];
    let mut steps = vec![];
    for e in &run.events {
        match e {
            ProgressKind::Step(s) => steps.push(*s),
            ProgressKind::Percent(ProgressStep::Transferring, p) => {
                assert_eq!(steps.last(), Some(&ProgressStep::Transferring));
                percents.push(*p);
            }
            _ => {}
        }
    }
    assert_eq!(
        steps,
        [
            ProgressStep::Downloading,
            ProgressStep::Transferring,
            ProgressStep::Updating
        ]
    );
    let blocks = img.len().div_ceil(0x400);
    assert!(percents.len() >= blocks - 1, "{percents:?}");
    assert!(percents.windows(2).all(|w| w[0] < w[1]), "{percents:?}");
    assert_eq!(percents.last(), Some(&100));
    assert_eq!(
        run.events.last(),
        Some(&ProgressKind::Finished(Outcome::Success))
    );
}

fn faults(f: impl FnOnce(&mut Faults)) -> SimConfig {
    let mut faults = Faults::default();
    f(&mut faults);
    SimConfig {
        faults,
        ..SimConfig::default()
    }
}

/// Case 3a: A lost reply: the block is sent again with the same sequence number.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_reply_is_retried_with_the_same_seq() {
    let sim = Simulator::start(faults(|f| {
        f.drop_reply.insert(2, 1);
    }))
    .unwrap();
    let img = app_image("2.0", 8_000);
    let run = install(&sim, &img, 0).await;
    assert_eq!(run.outcome, Outcome::Success);
    assert_flashed(&sim, &img, 0);
    let attempts = sim.stats().data_attempts;
    assert_eq!(attempts[&2], 2);
    assert!(
        attempts.iter().all(|(&seq, &n)| seq == 2 || n == 1),
        "{attempts:?}"
    );
}

/// Case 3b: A corrupt reply frame counts as no reply.
#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_reply_frame_is_retried() {
    let sim = Simulator::start(faults(|f| {
        f.corrupt_reply.insert(4, 2);
    }))
    .unwrap();
    let img = app_image("2.0", 8_000);
    let run = install(&sim, &img, 0).await;
    assert_eq!(run.outcome, Outcome::Success);
    assert_flashed(&sim, &img, 0);
    assert_eq!(sim.stats().data_attempts[&4], 3);
}

/// Case 3c: An error status is retried; when it persists the update fails naming the
/// block and the ROM's status.
#[tokio::test(flavor = "multi_thread")]
async fn error_status_is_retried_and_fails_when_it_persists() {
    let img = app_image("2.0", 8_000);
    let sim = Simulator::start(faults(|f| {
        f.error_status.insert(3, 1);
    }))
    .unwrap();
    assert_eq!(install(&sim, &img, 0).await.outcome, Outcome::Success);
    assert_flashed(&sim, &img, 0);
    assert_eq!(sim.stats().data_attempts[&3], 2);

    let sim = Simulator::start(faults(|f| {
        f.error_status.insert(3, u32::MAX);
    }))
    .unwrap();
    let run = install(&sim, &img, 0).await;
    let reason = failure(&run);
    assert!(
        reason.contains("esp8266 FLASH_DATA block 4/8 (seq 3)"),
        "{reason}"
    );
    assert!(
        reason.contains("status 0x01 reason 0x08 (flash write error)"),
        "{reason}"
    );
    assert!(reason.contains("after 3 attempts"), "{reason}");
    assert_eq!(sim.stats().data_attempts[&3], 3);
    assert!(
        !sim.stats().ops.contains(&0x04),
        "no FLASH_END after a failed block"
    );
}

/// Case 3d: A device that goes silent fails the update within seconds (not at the
/// engine's 30-minute limit) naming the step; after it recovers the next attempt
/// works.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_device_fails_within_seconds_and_the_next_attempt_succeeds() {
    let sim = Simulator::start(faults(|f| f.silent_from_seq = Some(5))).unwrap();
    let img = app_image("2.0", 12_000);
    let run = install(&sim, &img, 0).await;
    let reason = failure(&run).to_string();
    assert_eq!(
        reason,
        "esp8266 FLASH_DATA block 6/12 (seq 5): no response after 3 attempts"
    );

    // Still silent: the next attempt fails at SYNC.
    let run = install(&sim, &img, 0).await;
    assert!(
        failure(&run).starts_with("esp8266 SYNC: no response"),
        "{}",
        failure(&run)
    );

    sim.recover();
    let run = install(&sim, &img, 0).await;
    assert_eq!(run.outcome, Outcome::Success, "{:?}", run.events);
    assert_flashed(&sim, &img, 0);
}

/// Case 3e: Anything but an ESP8266 is refused after the chip check, before any erase.
#[tokio::test(flavor = "multi_thread")]
async fn another_chip_is_refused_before_erasing() {
    let sim = Simulator::start(faults(|f| f.chip_magic = Some(0x00F0_1D83))).unwrap();
    let run = install(&sim, &app_image("2.0", 4_000), 0).await;
    let reason = failure(&run);
    assert!(
        reason.starts_with("esp8266 READ_REG 0x40001000: chip magic 0x00f01d83 is not an ESP8266"),
        "{reason}"
    );
    assert!(!sim.stats().ops.contains(&0x02));
}

/// Case 3f: Faster deadlines are honoured (`with_timeouts`), and a device that never
/// answers SYNC fails at SYNC.
#[tokio::test(flavor = "multi_thread")]
async fn no_bootloader_fails_at_sync() {
    let sim = Simulator::start(SimConfig {
        sync_replies: 0,
        ..SimConfig::default()
    })
    .unwrap();
    let handler = Esp8266Handler::new("esp1", "esp", &esp_config(sim.path(), 0, None))
        .with_timeouts(Timeouts {
            syncs_per_round: 4,
            ..Timeouts::default()
        });
    let run = install_with(&sim, &app_image("2.0", 4_000), handler, 0).await;
    let reason = failure(&run);
    assert!(
        reason.starts_with("esp8266 SYNC: no response from the ROM bootloader on /dev/pts/"),
        "{reason}"
    );
    assert!(reason.contains("after 4 attempts"), "{reason}");
    assert_eq!(sim.stats().ops, vec![0x08; 4]);
}

/// A handler whose small commands time out after 200 ms, that never retries
/// (a late answer to an earlier attempt cannot rescue it) and allows
/// `erase_per_mib` for the erase.
fn strict_handler(sim: &Simulator, erase_per_mib: Duration) -> Esp8266Handler {
    Esp8266Handler::new("esp1", "esp", &esp_config(sim.path(), 0, None)).with_timeouts(Timeouts {
        command: Duration::from_millis(200),
        erase_per_mib,
        attempts: 1,
        ..Timeouts::default()
    })
}

/// A flash that erases at 128 KiB/s: FLASH_BEGIN for 64 KiB answers after
/// about 0.5 s, longer than a command's deadline. The agent waits for the erase
/// (its deadline grows with the size) and the update succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_erase_is_waited_for_within_the_erase_deadline() {
    let sim = Simulator::start(SimConfig {
        erase_rate: Some(128 * 1024),
        write_rate: Some(256 * 1024),
        ..SimConfig::default()
    })
    .unwrap();
    let image = app_image("2.0", 64 * 1024);
    // 60 s/MiB: 3.75 s for 64 KiB.
    let handler = strict_handler(&sim, Duration::from_secs(60));
    let run = install_with(&sim, &image, handler, 0).await;
    assert_eq!(run.outcome, Outcome::Success, "{:?}", run.events);
    assert_eq!(&sim.flash()[..image.len()], &image[..]);
    let (_, erased) = sim.stats().erased[0];
    assert!(erased >= 64 * 1024, "{erased}");
}

/// The same flash against an erase deadline shorter than the erase: the update
/// fails at FLASH_BEGIN and no data block is sent into a region still erasing.
#[tokio::test(flavor = "multi_thread")]
async fn an_erase_past_its_deadline_fails_at_flash_begin() {
    let sim = Simulator::start(SimConfig {
        erase_rate: Some(128 * 1024),
        ..SimConfig::default()
    })
    .unwrap();
    let image = app_image("2.0", 64 * 1024);
    // 1 s/MiB: 62 ms for 64 KiB, so the 200 ms command deadline applies.
    let handler = strict_handler(&sim, Duration::from_secs(1));
    let run = install_with(&sim, &image, handler, 0).await;
    let reason = failure(&run);
    assert!(reason.contains("esp8266 FLASH_BEGIN"), "{reason}");
    assert!(!sim.stats().ops.contains(&0x03), "FLASH_DATA sent");
}

/// Case 4: Bad images never reach the device: the simulator sees not one byte.
#[tokio::test(flavor = "multi_thread")]
async fn bad_images_are_refused_before_any_byte_is_sent() {
    let good = app_image("2.0", 6_000);
    let mut bad_magic = good.clone();
    bad_magic[0] = 0xEA;
    let mut bad_checksum = good.clone();
    bad_checksum[100] ^= 0x01;
    let truncated = good[..2_000].to_vec();
    let mut bad_count = good.clone();
    bad_count[1] = 0;
    let cases: [(&str, &[u8], &str); 4] = [
        ("bad magic", &bad_magic, "bad magic byte 0xea"),
        ("bad checksum", &bad_checksum, "checksum mismatch"),
        (
            "truncated segment",
            &truncated,
            "segment 0 at offset 0x8 declares 3010 bytes but only 1984 remain",
        ),
        ("no segments", &bad_count, "segment count 0"),
    ];
    for (what, img, expected) in cases {
        let sim = Simulator::start(SimConfig::default()).unwrap();
        let run = install(&sim, img, 0).await;
        let reason = failure(&run);
        assert!(
            reason.starts_with("esp8266 image check: "),
            "{what}: {reason}"
        );
        assert!(reason.contains(expected), "{what}: {reason}");
        assert_eq!(
            bytes_before_marker(&sim),
            0,
            "{what}: bytes reached the device"
        );
    }
}

/// How many bytes the simulator received before a marker byte the test writes
/// now: the pty delivers in order, so once the marker is in, so is everything a
/// finished install wrote (no wait for "nothing more came").
fn bytes_before_marker(sim: &Simulator) -> usize {
    use std::io::Write;
    let before = sim.stats().bytes_received;
    std::fs::OpenOptions::new()
        .write(true)
        .open(sim.path())
        .unwrap()
        .write_all(&[0xC0])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = sim.stats().bytes_received;
        if now > before {
            return now - 1;
        }
        assert!(Instant::now() < deadline, "the marker byte never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn version_command(dump: &Path) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        "grep -aoE 'FWVER=[0-9.]+' \"$0\" | head -n1 | cut -d= -f2".into(),
        dump.display().to_string(),
    ]
}

/// A simulator whose application reports `FWVER` through a dump of its flash.
fn device_running(version: &str, dump: PathBuf) -> Simulator {
    Simulator::start(SimConfig {
        flash_size: 1024 * 1024,
        initial_flash: app_image(version, 30_000),
        dump_on_end: Some(dump),
        ..SimConfig::default()
    })
    .unwrap()
}

/// A config for the binary: device `esp1` on `sim`, `version_command` reading
/// `dump` when given.
fn binary_config(dir: &Path, sim: &Simulator, dump: Option<&Path>) -> PathBuf {
    let version_command = dump.map_or(String::new(), |dump| {
        let argv = version_command(dump)
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("version_command = [{argv}]\n")
    });
    std::fs::create_dir_all(dir.join("firmware/esp")).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = {:?}\n[source]\nkind = \"directory\"\npath = {:?}\n\
             [[device]]\nid = \"esp1\"\ntype = \"esp\"\nhandler = \"esp8266\"\nport = {:?}\n\
             baud = 115200\nreset = \"none\"\n{version_command}",
            dir.join("state").display().to_string(),
            dir.join("firmware").display().to_string(),
            sim.path().display().to_string(),
        ),
    )
    .unwrap();
    config
}

/// `fota-agent --config <config> <args>`: (exit success, output).
fn agent(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fota-agent"))
        .env("RUST_LOG", "info")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), process::text(&out))
}

/// Case 5: `fota-agent install` (the real binary) with `handler = "esp8266"` and
/// `reset = "none"`; the version is confirmed through `version_command`.
#[test]
fn fota_agent_install_flashes_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let dump = dir.join("flash.bin");
    let sim = device_running("1.0", dump.clone());
    let img = app_image("2.0", 40_000);
    std::fs::write(dir.join("image.bin"), &img).unwrap();
    let config = binary_config(dir, &sim, Some(&dump));
    let image = dir.join("image.bin").display().to_string();
    let (ok, text) = agent(
        &config,
        &["install", "--device", "esp1", &image, "--version", "2.0"],
    );
    assert!(ok, "{text}");
    assert!(text.contains("esp1: success"), "{text}");
    assert_flashed(&sim, &img, 0);
}

/// Without `version_command` the ROM cannot tell the version: after the agent
/// installed 2.0, `check` shows it as the agent's, and newer firmware becomes
/// an update `run` can apply.
#[test]
fn the_version_the_agent_installed_is_the_devices_version() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sim = device_running("1.0", dir.join("flash.bin"));
    let config = binary_config(dir, &sim, None);
    let (_, before) = agent(&config, &["check"]);
    assert!(
        before.contains("current=?") && before.contains("status=UNKNOWN"),
        "{before}"
    );
    let img = app_image("2.0", 20_000);
    std::fs::write(dir.join("image.bin"), &img).unwrap();
    let image = dir.join("image.bin").display().to_string();
    let (ok, text) = agent(
        &config,
        &["install", "--device", "esp1", &image, "--version", "2.0"],
    );
    assert!(ok, "{text}");
    assert_flashed(&sim, &img, 0);
    common::offer(
        &dir.join("firmware"),
        "esp",
        "3.0",
        &app_image("3.0", 20_000),
        "",
    );
    let (ok, after) = agent(&config, &["check"]);
    assert!(ok, "{after}");
    assert!(
        after.contains("current=2.0, as installed by fota-agent"),
        "{after}"
    );
    assert!(
        after.contains("status=UPDATE_EXECUTABLE") && after.contains("would get=3.0"),
        "{after}"
    );
}

/// Case 6: Eight devices on eight ptys, one engine cycle, at most
/// `max_concurrent_updates` at once, every one confirmed by its version.
#[tokio::test(flavor = "multi_thread")]
async fn eight_devices_update_concurrently_within_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let firmware = tmp.path().join("firmware");
    let img = app_image("2.0", 30_000);
    common::offer(&firmware, "esp", "2.0", &img, "");
    let mut sims = vec![];
    let mut devices: Vec<(DeviceConfig, Arc<dyn UpdateHandler>)> = vec![];
    for i in 0..8 {
        let dump = tmp.path().join(format!("flash-{i}.bin"));
        let sim = device_running("1.0", dump.clone());
        let config = esp_device(
            &format!("esp{i}"),
            sim.path(),
            0,
            Some(version_command(&dump)),
        );
        let HandlerConfig::Esp8266(c) = &config.handler else {
            unreachable!()
        };
        let handler = Arc::new(Esp8266Handler::new(&config.id, "esp", c));
        devices.push((config, handler));
        sims.push(sim);
    }
    let engine = engine(&tmp.path().join("state"), &firmware, devices, 3);
    let mut rx = engine.subscribe();
    let results = engine.run_once().await;
    for r in &results {
        assert_eq!(
            r.outcome,
            Some(Outcome::Success),
            "{}: {:?}",
            r.device_id,
            r
        );
    }
    let (mut running, mut peak) = (0i32, 0i32);
    for kind in common::drain(&mut rx) {
        match kind {
            ProgressKind::Sequence(_) => running += 1,
            ProgressKind::Finished(_) => running -= 1,
            _ => {}
        }
        peak = peak.max(running);
    }
    assert!((2..=3).contains(&peak), "peak {peak}");
    for sim in &sims {
        assert_flashed(sim, &img, 0);
    }
}
