//! `handler = "esp8266-wifi"` through the `fota-agent` binary with the directory
//! source, against the simulated IoT_Demo fleet in `esp8266_wifi_sim` over real
//! TCP (cloud port) and HTTP/1.0 (ROM port) on loopback.

mod esp8266_wifi_sim;
mod process;

use std::path::Path;
use std::time::{Duration, Instant};

use esp8266_wifi_sim::{Cloud, DeviceState, Fault, SimDevice, user_bin};
use process::free_port;

const TYPE: &str = "esp-light";
const V0: &str = "v1.0.0t45772(a)";
const V1: &str = "v1.1.0t45772(a)";
const V2: &str = "v1.1.1t45772(a)";

fn key(n: usize) -> String {
    format!("{n:0>40}")
}

/// Offers `version` as the pair user1.bin / user2.bin (the given bins).
fn offer(root: &Path, version: &str, user1: &[u8], user2: &[u8]) {
    let dir = root.join("firmware").join(TYPE);
    std::fs::create_dir_all(&dir).unwrap();
    let stem = version.replace(['(', ')'], "_");
    std::fs::write(dir.join(format!("{stem}-user1.bin")), user1).unwrap();
    std::fs::write(dir.join(format!("{stem}-user2.bin")), user2).unwrap();
    std::fs::write(
        dir.join(format!("{stem}.properties")),
        format!("version = {version}\nimage = {stem}-user1.bin\nimage2 = {stem}-user2.bin\n"),
    )
    .unwrap();
}

/// A config for `devices` sharing one gateway on free loopback ports.
fn config(root: &Path, devices: usize, extra_agent: &str) -> (std::path::PathBuf, Cloud) {
    config_stall(root, devices, extra_agent, "30s")
}

/// [`config`] with the devices' `stall_timeout`.
fn config_stall(
    root: &Path,
    devices: usize,
    extra_agent: &str,
    stall: &str,
) -> (std::path::PathBuf, Cloud) {
    let cloud = Cloud {
        cloud: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        rom: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    };
    let mut text = format!(
        "[agent]\nstate_dir = {:?}\nupdate_timeout = \"1m\"\nmax_concurrent_updates = {devices}\n\
         {extra_agent}\n[status]\nlisten = \"off\"\n\
         [source]\nkind = \"directory\"\npath = {:?}\n",
        root.join("state").display().to_string(),
        root.join("firmware").display().to_string(),
    );
    for n in 0..devices {
        text.push_str(&format!(
            "[[device]]\nid = \"light-{n}\"\ntype = \"{TYPE}\"\nhandler = \"esp8266-wifi\"\n\
             version_scheme = \"espressif\"\nkey = \"{}\"\nptype = 45772\n\
             cloud_listen = \"{}\"\nrom_listen = \"{}\"\nstall_timeout = \"{stall}\"\n\
             connect_timeout = \"20s\"\n",
            key(n),
            cloud.cloud,
            cloud.rom
        ));
    }
    let path = root.join("config.toml");
    std::fs::write(&path, text).unwrap();
    (path, cloud)
}

fn agent(config: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_fota-agent"));
    cmd.env("RUST_LOG", "info")
        .env_remove("FOTA_AGENT_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// `run --once` with the fleet running: (exit success, output).
async fn run_once(
    config: &Path,
    cloud: Cloud,
    fleet: &[std::sync::Arc<SimDevice>],
) -> (bool, String) {
    let tasks: Vec<_> = fleet
        .iter()
        .map(|d| esp8266_wifi_sim::spawn(d.clone(), cloud))
        .collect();
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        agent(config, &["run", "--once"]).output(),
    )
    .await
    .expect("fota-agent run --once hung")
    .unwrap();
    for t in tasks {
        t.abort();
    }
    (out.status.success(), process::text(&out))
}

/// Waits (bounded) until `done` holds for the device.
async fn wait_until(device: &SimDevice, what: &str, done: impl Fn(&DeviceState) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&device.state()) {
        assert!(Instant::now() < deadline, "{what}: {:?}", device.state());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_goes_user1_to_user2_and_back_over_wifi() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    offer(root, V1, &user_bin(1, 30_000, 1), &user_bin(2, 30_000, 2));
    let (config, cloud) = config(root, 1, "poll_interval = \"300ms\"");
    let device = SimDevice::new(&key(0), V0, Fault::None);
    let sim = esp8266_wifi_sim::spawn(device.clone(), cloud);
    let mut service = agent(&config, &["run"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read, so the service never blocks on a full pipe.
    let _log = collect(service.stderr.take().unwrap());

    wait_until(&device, "on user2 with v1.1.0", |s| {
        s.slot == 2 && s.version == V1
    })
    .await;
    offer(root, V2, &user_bin(1, 40_000, 3), &user_bin(2, 40_000, 4));
    wait_until(&device, "back on user1 with v1.1.1", |s| {
        s.slot == 1 && s.version == V2
    })
    .await;
    let state_file = root.join("state/devices/light-0.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&state_file).unwrap_or_default();
        if text.contains(V2) && text.contains("success") {
            break;
        }
        assert!(Instant::now() < deadline, "no success recorded: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service.kill().await.unwrap();
    sim.abort();
    let log = device.state().log;
    let downloads: Vec<&String> = log.iter().filter(|l| l.starts_with("GET")).collect();
    assert_eq!(downloads.len(), 2, "{log:?}");
    assert!(
        downloads[0].starts_with("GET user2.bin 200 30012 bytes"),
        "{log:?}"
    );
    assert!(
        downloads[1].starts_with("GET user1.bin 200 40012 bytes"),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l == "HEAD user2.bin 200"), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_devices_update_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    offer(
        tmp.path(),
        V1,
        &user_bin(1, 20_000, 5),
        &user_bin(2, 20_000, 6),
    );
    let (config, cloud) = config(tmp.path(), 3, "");
    let fleet: Vec<_> = (0..3)
        .map(|n| SimDevice::new(&key(n), V0, Fault::None))
        .collect();
    let (ok, out) = run_once(&config, cloud, &fleet).await;
    assert!(ok, "{out}");
    for (n, d) in fleet.iter().enumerate() {
        assert!(
            out.contains(&format!("light-{n}: {V0} → {V1}: success")),
            "{out}"
        );
        let s = d.state();
        assert_eq!((s.slot, s.version.as_str()), (2, V1), "{s:?}");
    }
}

/// One device with `fault` offered `user1` / `user2` as V1 by `run --once`,
/// which must fail: its output and the device afterwards (still on V0, slot 1).
async fn failed_update(user1: &[u8], user2: &[u8], fault: Fault) -> (String, DeviceState) {
    let tmp = tempfile::tempdir().unwrap();
    offer(tmp.path(), V1, user1, user2);
    let stall = if fault == Fault::StallAfterHead {
        "1s"
    } else {
        "30s"
    };
    let (config, cloud) = config_stall(tmp.path(), 1, "", stall);
    let device = SimDevice::new(&key(0), V0, fault);
    let (ok, out) = run_once(&config, cloud, std::slice::from_ref(&device)).await;
    assert!(!ok, "{out}");
    let s = device.state();
    assert_eq!((s.slot, s.version.as_str()), (1, V0), "{s:?}\n{out}");
    (out, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_upgrade_failed_ends_the_update_on_the_old_slot() {
    let (u1, u2) = (user_bin(1, 10_000, 7), user_bin(2, 10_000, 8));
    let (out, _) = failed_update(&u1, &u2, Fault::ReportFailed).await;
    let reason = "device_upgrade_failed: the device refused user2.bin of v1.1.0t45772(a)";
    assert!(out.contains(reason), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_crc_is_refused_before_the_device_is_asked() {
    let mut user2 = user_bin(2, 10_000, 9);
    // gen_appbin.py's bug: crc+1 of the standard CRC instead of its complement.
    let n = user2.len() - 4;
    let buggy = crc32fast::hash(&user2[..n]).wrapping_add(1);
    user2[n..].copy_from_slice(&buggy.to_le_bytes());
    let (out, s) = failed_update(&user_bin(1, 10_000, 9), &user2, Fault::None).await;
    assert!(out.contains("user2.bin refused: stored CRC"), "{out}");
    assert!(out.contains("gen_appbin.py's known bug"), "{out}");
    assert!(!s.log.iter().any(|l| l.starts_with("HEAD")), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_slot_image_is_refused() {
    // Both bins linked for user1: the pair is wrong.
    let (u1, u2) = (user_bin(1, 10_000, 10), user_bin(1, 10_000, 11));
    let (out, _) = failed_update(&u1, &u2, Fault::None).await;
    let reason = "linked for user1.bin, but offered as user2.bin (wrong slot)";
    assert!(out.contains(reason), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_mid_download_fails_cleanly_on_the_old_version() {
    let (u1, u2) = (user_bin(1, 200_000, 12), user_bin(2, 200_000, 13));
    let (out, s) = failed_update(&u1, &u2, Fault::PowerLossMidDownload).await;
    assert!(out.contains("device light-0 disconnected after"), "{out}");
    assert!(out.contains("it keeps its old firmware"), "{out}");
    assert!(s.log.iter().any(|l| l == "power loss"), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_download_fails_after_stall_timeout() {
    let (u1, u2) = (user_bin(1, 10_000, 14), user_bin(2, 10_000, 15));
    let (out, s) = failed_update(&u1, &u2, Fault::StallAfterHead).await;
    assert!(
        out.contains("the device did not start downloading v1.1.0t45772(a) (stalled for 1s)"),
        "{out}"
    );
    assert!(s.log.iter().any(|l| l == "HEAD user2.bin 200"), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_is_updated_when_it_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("firmware").join(TYPE)).unwrap();
    let (config, cloud) = config(root, 1, "poll_interval = \"200ms\"");
    let device = SimDevice::new(&key(0), V0, Fault::None);
    let sim = esp8266_wifi_sim::spawn(device.clone(), cloud);
    let mut service = agent(&config, &["run"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect(service.stderr.take().unwrap());
    // Activated and identified (second boot), then switched off.
    wait_until(&device, "identified", |s| s.activated && s.boots >= 2).await;
    sim.abort();
    offer(root, V1, &user_bin(1, 10_000, 16), &user_bin(2, 10_000, 17));
    // The agent sees the firmware but leaves the update until the device is back.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log
        .lock()
        .unwrap()
        .contains("update available but not executable now")
    {
        assert!(Instant::now() < deadline, "{}", log.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!log.lock().unwrap().contains("update started"));
    let sim = esp8266_wifi_sim::spawn(device.clone(), cloud);
    wait_until(&device, "on user2 with v1.1.0", |s| {
        s.slot == 2 && s.version == V1
    })
    .await;
    service.kill().await.unwrap();
    sim.abort();
}

/// Everything `stderr` writes, read by a task so the writer never blocks.
fn collect(stderr: tokio::process::ChildStderr) -> std::sync::Arc<std::sync::Mutex<String>> {
    use tokio::io::AsyncReadExt;
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = text.clone();
    tokio::spawn(async move {
        let mut stderr = stderr;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}
