//! Issue #12 through the binary: one process per state directory, no orphaned
//! update command, confirmation while the device reboots, the small CLI faults.

mod process;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use process::{text, wait_for, with_config as agent, write_exec};

/// Whether `pid` runs (a zombie does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
}

fn gone_within(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// One command-handler device `dev` offered 2.0; every version and update command
/// run is appended to `calls`; the update hangs (pid in `pid`) while `hang` exists.
fn setup(tmp: &Path) -> PathBuf {
    let dir = tmp.display();
    let fw = tmp.join("firmware/t");
    std::fs::create_dir_all(&fw).unwrap();
    std::fs::write(fw.join("fw.bin"), b"firmware 2.0").unwrap();
    std::fs::write(fw.join("fw.properties"), "version = 2.0\nimage = fw.bin\n").unwrap();
    write_exec(
        &tmp.join("version.sh"),
        &format!("echo version >> {dir}/calls\ncat {dir}/version 2>/dev/null || echo 1.0\n"),
    );
    write_exec(
        &tmp.join("update.sh"),
        &format!(
            "echo update >> {dir}/calls\n\
             if [ -e {dir}/hang ]; then echo $$ > {dir}/pid.tmp; mv {dir}/pid.tmp {dir}/pid; exec sleep 1000; fi\n\
             echo \"$FOTA_VERSION\" > {dir}/version\n"
        ),
    );
    let config = tmp.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{dir}/state\"\n\
             [status]\nlisten = \"off\"\n\
             [source]\nkind = \"directory\"\npath = \"{dir}/firmware\"\n\
             [[device]]\nid = \"dev\"\ntype = \"t\"\nhandler = \"command\"\n\
             version_command = [\"{dir}/version.sh\"]\nupdate_command = [\"{dir}/update.sh\"]\n"
        ),
    )
    .unwrap();
    config
}

fn hanging_update(tmp: &Path, config: &Path, args: &[&str]) -> (Child, i32) {
    std::fs::write(tmp.join("hang"), "").unwrap();
    let child = agent(config)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = wait_for(&tmp.join("pid")).trim().parse().unwrap();
    (child, pid)
}

#[test]
fn a_second_process_on_the_state_directory_is_refused_and_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let (mut service, script) = hanging_update(tmp.path(), &config, &["run"]);
    let calls = std::fs::read_to_string(tmp.path().join("calls")).unwrap();
    let image = tmp.path().join("firmware/t/fw.bin");
    for args in [
        vec!["install", "--device", "dev", image.to_str().unwrap()],
        vec!["run", "--once"],
    ] {
        let out = agent(&config).args(&args).output().unwrap();
        let log = text(&out);
        assert!(!out.status.success(), "{args:?}: {log}");
        assert!(log.contains(&format!("PID {}", service.id())), "{log}");
        assert!(log.contains("run"), "{log}");
        if args[0] == "install" {
            assert!(log.contains("POST /devices/dev/update"), "{log}");
        }
    }
    // No version or update command of the device ran for the refused ones.
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("calls")).unwrap(),
        calls
    );
    assert!(alive(script));
    kill(Pid::from_raw(service.id() as i32), Signal::SIGTERM).unwrap();
    service.wait().unwrap();
    assert!(gone_within(script));
}

#[test]
fn sigterm_to_install_kills_the_update_command_and_keeps_the_in_flight_record() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let image = tmp.path().join("firmware/t/fw.bin");
    let args = ["install", "--device", "dev", image.to_str().unwrap()];
    let (mut install, script) = hanging_update(tmp.path(), &config, &args);
    kill(Pid::from_raw(install.id() as i32), Signal::SIGTERM).unwrap();
    let status = install.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(gone_within(script), "update command {script} survived");
    let state = std::fs::read_to_string(tmp.path().join("state/devices/dev.json")).unwrap();
    assert!(state.contains("\"phase\": \"update\""), "{state}");
}

#[test]
fn after_sigkill_the_next_start_kills_the_surviving_command_first() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let (mut once, script) = hanging_update(tmp.path(), &config, &["run", "--once"]);
    // The agent records the command's group right after spawning it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(tmp.path().join("state/devices/dev.json"))
        .is_ok_and(|s| s.contains("\"pgid\""))
    {
        assert!(
            Instant::now() < deadline,
            "the process group was never recorded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    once.kill().unwrap();
    once.wait().unwrap();
    assert!(alive(script), "the command outlives a SIGKILLed agent");
    let state = std::fs::read_to_string(tmp.path().join("state/devices/dev.json")).unwrap();
    assert!(state.contains("\"pgid\""), "{state}");
    std::fs::remove_file(tmp.path().join("hang")).unwrap();
    let out = agent(&config).args(["run", "--once"]).output().unwrap();
    let log = text(&out);
    assert!(!alive(script), "survivor {script} not killed\n{log}");
    let killed = log
        .find("still runs; killing its process group")
        .expect(&log);
    let recovered = log.find("recovered interrupted update").expect(&log);
    assert!(killed < recovered, "{log}");
    assert!(out.status.success(), "{log}");
}

/// `setup`'s device, but after its update it "reboots": its version command
/// fails `reboots` times before it answers again (`confirm_window` 30 s).
fn rebooting_device(tmp: &Path, reboots: u32) -> PathBuf {
    let config = setup(tmp);
    let dir = tmp.display();
    write_exec(
        &tmp.join("version.sh"),
        &format!(
            "echo version >> {dir}/calls
             n=$(cat {dir}/reboots 2>/dev/null || echo 0)
             if [ \"$n\" -gt 0 ]; then echo $((n - 1)) > {dir}/reboots; echo 'no answer' >&2; exit 1; fi
             cat {dir}/version 2>/dev/null || echo 1.0
"
        ),
    );
    write_exec(
        &tmp.join("update.sh"),
        &format!(
            "echo update >> {dir}/calls
echo \"$FOTA_VERSION\" > {dir}/version
             echo {reboots} > {dir}/reboots
"
        ),
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replacen("[agent]\n", "[agent]\nconfirm_window = \"30s\"\n", 1);
    std::fs::write(&config, text).unwrap();
    config
}

fn last_outcome(tmp: &Path) -> serde_json::Value {
    let state = std::fs::read_to_string(tmp.join("state/devices/dev.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&state).unwrap()["last_outcome"].clone()
}

#[test]
fn an_update_is_confirmed_once_the_rebooting_device_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let config = rebooting_device(tmp.path(), 3);
    let out = agent(&config).args(["run", "--once"]).output().unwrap();
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let outcome = last_outcome(tmp.path());
    assert_eq!(outcome["outcome"], "success", "{outcome}\n{log}");
    assert_eq!(outcome["version"], "2.0");
    assert!(log.contains("the device may be rebooting"), "{log}");
    // One read before, three unanswered, one that confirms; one update.
    let calls = std::fs::read_to_string(tmp.path().join("calls")).unwrap();
    assert_eq!(calls.matches("version").count(), 5, "{calls}");
    assert_eq!(calls.matches("update").count(), 1, "{calls}");
}

#[test]
fn recovery_waits_for_the_rebooting_device_before_it_judges() {
    let tmp = tempfile::tempdir().unwrap();
    let config = rebooting_device(tmp.path(), 2);
    // The agent died in the update step; the device was flashed and reboots.
    let devices = tmp.path().join("state/devices");
    std::fs::create_dir_all(&devices).unwrap();
    std::fs::write(
        devices.join("dev.json"),
        r#"{"in_flight": {"version": "2.0", "phase": "update", "started_at": 1}}"#,
    )
    .unwrap();
    std::fs::write(tmp.path().join("version"), "2.0\n").unwrap();
    std::fs::write(tmp.path().join("reboots"), "2\n").unwrap();
    let out = agent(&config).args(["run", "--once"]).output().unwrap();
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let outcome = last_outcome(tmp.path());
    assert_eq!(outcome["outcome"], "success", "{outcome}\n{log}");
    let calls = std::fs::read_to_string(tmp.path().join("calls")).unwrap();
    assert_eq!(calls.matches("update").count(), 0, "{calls}");
}

#[test]
fn small_cli_faults() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    // `check` creates no state directory.
    let out = agent(&config).arg("check").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!tmp.path().join("state").exists());
    // An empty FOTA_AGENT_CONFIG does not break an explicit --config.
    let out = agent(&config)
        .env("FOTA_AGENT_CONFIG", "")
        .arg("check-config")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // An unknown device: the configured ids are listed.
    let image = tmp.path().join("firmware/t/fw.bin");
    let out = agent(&config)
        .args(["install", "--device", "nosuch", image.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        text(&out).contains("configured devices: dev"),
        "{}",
        text(&out)
    );
    // A wrong image path keeps the device's last outcome.
    let out = agent(&config).args(["run", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let state = tmp.path().join("state/devices/dev.json");
    let before = std::fs::read_to_string(&state).unwrap();
    let out = agent(&config)
        .args(["install", "--device", "dev", "/nonexistent.bin"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("/nonexistent.bin"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&state).unwrap(), before);
    // A state directory under a regular file: one line, EX_CONFIG.
    std::fs::write(tmp.path().join("file"), "").unwrap();
    let body = std::fs::read_to_string(&config).unwrap().replace(
        &format!("{}/state", tmp.path().display()),
        &format!("{}/file/state", tmp.path().display()),
    );
    std::fs::write(&config, body).unwrap();
    let out = agent(&config).args(["run", "--once"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .trim_end()
            .lines()
            .count(),
        1
    );
}
