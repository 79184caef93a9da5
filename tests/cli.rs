//! The `fota-agent` binary end to end: the demo, config errors, the command
//! handler's timeout, and crash recovery — real processes, real files.

mod process;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use process::{agent, exit_within, text, wait_for, with_config, write_exec};

fn run(config: &Path, args: &[&str]) -> Output {
    agent()
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if kill(Pid::from_raw(pid), None).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// config/demo.toml with its state in `dir` and its paths made absolute.
fn demo_config(dir: &Path) -> PathBuf {
    let demo = std::fs::read_to_string(repo().join("config/demo.toml")).unwrap();
    let config = demo
        .replace(
            "\"../target/demo-state\"",
            &format!("{:?}", dir.join("state")),
        )
        .replace("\"../", &format!("\"{}/", repo().display()));
    let path = dir.join("demo.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// On a terminal `install` redraws one progress line in place and leaves it
/// showing the outcome.
#[test]
fn install_on_a_terminal_draws_a_progress_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = demo_config(tmp.path());
    let image = repo().join("demo/firmware/demo-sensor/demo-sensor-2.0.0.bin");
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut master = std::fs::File::from(pty.master);
    // The terminal is read while the agent runs, so it never blocks on a full one.
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut seen = Vec::new();
        // EIO once the last writer (the agent) closed its side.
        let _ = master.read_to_end(&mut seen);
        String::from_utf8_lossy(&seen).into_owned()
    });
    let mut install = agent();
    install
        .env("DEMO_FLASH", tmp.path().join("flash"))
        .arg("--config")
        .arg(&config)
        .args(["install", "--device", "demo-sensor-1"])
        .arg(&image)
        .args(["--version", "2.0.0"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(pty.slave));
    let status = install.status().unwrap();
    // `install` owned the last copy of the terminal's writing side.
    drop(install);
    let shown = reader.join().unwrap();
    assert!(status.success(), "{shown}");
    let full = format!("[{}] 100% success", "=".repeat(40));
    // The terminal turns the final newline into CR LF.
    let last = format!("\r{:>13} {full}\x1b[K\r\n", "UPDATING");
    assert!(shown.contains(&last), "{shown:?}");
    assert!(shown.contains("TRANSFERRING ["), "{shown:?}");
}

/// The runtime runs one worker thread unless `TOKIO_WORKER_THREADS` says
/// otherwise; a value that is not a thread count is refused by name.
#[test]
fn one_worker_thread_unless_the_environment_asks_for_more() {
    let tmp = tempfile::tempdir().unwrap();
    let config = demo_config(tmp.path());
    let once = |workers: Option<&str>| {
        let mut cmd = agent();
        if let Some(n) = workers {
            cmd.env("TOKIO_WORKER_THREADS", n);
        }
        cmd.env("DEMO_FLASH", tmp.path().join("flash"))
            .arg("--config")
            .arg(&config)
            .args(["run", "--once"])
            .output()
            .unwrap()
    };
    for (env, expected) in [(None, "workers=1"), (Some("3"), "workers=3")] {
        let out = once(env);
        let log = text(&out);
        assert!(out.status.success(), "{log}");
        assert!(log.contains(expected), "{env:?}: {log}");
    }
    for bad in ["0", "lots", "65"] {
        let out = once(Some(bad));
        let log = text(&out);
        assert!(!out.status.success(), "{log}");
        let why =
            format!("TOKIO_WORKER_THREADS={bad:?}: expected a number of threads from 1 to 64");
        assert!(log.contains(&why), "{log}");
    }
}

/// The README's demo: the pretend device goes from 1.0.0 to 2.0.0, then is up to date.
#[test]
fn demo_updates_the_demo_device_then_it_is_up_to_date() {
    let tmp = tempfile::tempdir().unwrap();
    let config_path = demo_config(tmp.path());
    let flash = tmp.path().join("flash");
    let run_demo = |args: &[&str]| {
        agent()
            .env("DEMO_FLASH", &flash)
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .output()
            .unwrap()
    };

    let check = run_demo(&["check"]);
    let out = text(&check);
    assert!(check.status.success(), "{out}");
    assert!(out.contains("current=1.0.0"), "{out}");
    assert!(
        out.contains("UPDATE_EXECUTABLE") && out.contains("would get=2.0.0"),
        "{out}"
    );

    let first = run_demo(&["run", "--once"]);
    let out = text(&first);
    assert!(first.status.success(), "{out}");
    for needle in [
        "DOWNLOADING",
        "TRANSFERRING",
        "UPDATING",
        "update succeeded",
        "2.0.0: success",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    let flashed = std::fs::read_to_string(&flash).unwrap();
    assert!(flashed.starts_with("DEMO-SENSOR FIRMWARE 2.0.0\n"));

    let second = run_demo(&["run", "--once"]);
    let out = text(&second);
    assert!(second.status.success(), "{out}");
    assert!(out.contains("UP_TO_DATE"), "{out}");
    assert!(!out.contains("DOWNLOADING"), "{out}");
}

#[test]
fn check_config_names_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.toml");
    let cases = [
        (
            "[agent]\nupdate_timeout = \"30m\"\n\n[[device]]\nid = \"esp-1\"\ntype = \"esp\"\nhandler = \"esp8267\"\n",
            ":7:",
            "esp8267",
        ),
        ("[agent]\ncolour = \"blue\"\n", ":2:", "colour"),
        (
            "[agent]\n\nupdate_timeout = \"soon\"\n",
            ":3:",
            "update_timeout",
        ),
    ];
    for (body, line, key) in cases {
        std::fs::write(&path, body).unwrap();
        let out = run(&path, &["check-config"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "EX_CONFIG for {body}");
        let first = stderr.lines().next().unwrap_or("");
        assert!(first.contains(&format!("config.toml{line}")), "{first}");
        assert!(first.contains(key), "{first}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    }
    for shipped in ["config/config.toml", "config/demo.toml"] {
        let out = run(&repo().join(shipped), &["check-config"]);
        assert!(out.status.success(), "{shipped}: {}", text(&out));
        assert!(text(&out).contains(": ok ("), "{}", text(&out));
    }
}

/// A config with one command-handler device of type `t` offered version 2.0.
fn setup(tmp: &Path, update_timeout: &str, update_script: &str) -> PathBuf {
    let fw = tmp.join("firmware/t");
    std::fs::create_dir_all(&fw).unwrap();
    std::fs::write(fw.join("fw.bin"), b"firmware 2.0").unwrap();
    std::fs::write(fw.join("fw.properties"), "version = 2.0\nimage = fw.bin\n").unwrap();
    let dir = tmp.display();
    write_exec(
        &tmp.join("version.sh"),
        &format!("cat {dir}/version 2>/dev/null || echo 1.0\n"),
    );
    write_exec(&tmp.join("update.sh"), update_script);
    let config = tmp.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{dir}/state\"\nupdate_timeout = \"{update_timeout}\"\n\
             [source]\nkind = \"directory\"\npath = \"{dir}/firmware\"\n\
             [[device]]\nid = \"dev\"\ntype = \"t\"\nhandler = \"command\"\n\
             version_command = [\"{dir}/version.sh\"]\nupdate_command = [\"{dir}/update.sh\"]\n"
        ),
    )
    .unwrap();
    config
}

#[test]
fn command_past_the_update_timeout_is_killed_with_its_children() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().display().to_string();
    let config = setup(
        tmp.path(),
        "1s",
        &format!(
            "sleep 1000 &\necho \"$$ $!\" > {dir}/pids.tmp && mv {dir}/pids.tmp {dir}/pids\nsleep 1000\n"
        ),
    );
    // The script sleeps 1000 s: an agent that waits for it is still running
    // long after the 2 minutes allowed here.
    let log_path = tmp.path().join("run.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = with_config(&config)
        .args(["run", "--once"])
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let status = exit_within(&mut child, Duration::from_secs(120));
    let log = std::fs::read_to_string(&log_path).unwrap();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("still running 2 minutes after its 1 s timeout\n{log}");
    }
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    assert!(log.contains("timed out after 1s"), "{log}");
    let pids = std::fs::read_to_string(tmp.path().join("pids")).unwrap();
    for pid in pids.split_whitespace() {
        assert!(gone(pid.parse().unwrap()), "process {pid} survived\n{log}");
    }
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("version")).ok(),
        None
    );
}

/// Kills the agent with SIGKILL while the device's update step runs, then starts it
/// again; the restarted agent resolves the outcome from the device's version.
fn crash_mid_update(flash_before_hanging: bool) -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().display().to_string();
    let flash = if flash_before_hanging {
        format!("echo \"$FOTA_VERSION\" > {dir}/version\n")
    } else {
        String::new()
    };
    let config = setup(
        tmp.path(),
        "10m",
        &format!(
            "{flash}if [ -e {dir}/hang ]; then echo $$ > {dir}/pid; exec sleep 1000; fi\n\
             echo \"$FOTA_VERSION\" > {dir}/version\n"
        ),
    );
    std::fs::write(tmp.path().join("hang"), "").unwrap();
    let mut child = agent()
        .arg("--config")
        .arg(&config)
        .args(["run", "--once"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let script: i32 = wait_for(&tmp.path().join("pid")).trim().parse().unwrap();
    child.kill().unwrap(); // SIGKILL: no chance to record anything
    child.wait().unwrap();
    // The "device" loses power too.
    killpg(Pid::from_raw(script), Signal::SIGKILL).unwrap();
    let state = std::fs::read_to_string(tmp.path().join("state/devices/dev.json")).unwrap();
    assert!(state.contains("\"phase\": \"update\""), "{state}");
    std::fs::remove_file(tmp.path().join("hang")).unwrap();

    let out = run(&config, &["run", "--once"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    (tmp, log)
}

#[test]
fn restart_after_crash_resolves_success_from_the_device_version() {
    let (tmp, log) = crash_mid_update(true);
    assert!(
        log.contains("recovered interrupted update: success"),
        "{log}"
    );
    // Already on 2.0: no second update.
    assert!(!log.contains("DOWNLOADING"), "{log}");
    let state = std::fs::read_to_string(tmp.path().join("state/devices/dev.json")).unwrap();
    assert!(!state.contains("in_flight"), "{state}");
    assert!(state.contains("\"outcome\": \"success\""), "{state}");
    // Reported exactly once: a further start has nothing to recover.
    let again = run(&tmp.path().join("config.toml"), &["run", "--once"]);
    assert!(!text(&again).contains("recovered"), "{}", text(&again));
}

#[test]
fn restart_after_crash_resolves_failure_and_retries() {
    let (tmp, log) = crash_mid_update(false);
    assert!(
        log.contains("recovered interrupted update: failed: interrupted by an agent restart; device reports version 1.0, not 2.0"),
        "{log}"
    );
    // The retry that follows installs it.
    assert!(log.contains("1.0 → 2.0: success"), "{log}");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("version"))
            .unwrap()
            .trim(),
        "2.0"
    );
}

/// Secret keys from a file or a systemd credential; the warning about a literal
/// secret in a config every user can read; plain MQTT needs the opt-out.
#[test]
fn secrets_from_files_and_credentials_and_the_readable_config_warning() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.toml");
    let config = |token: &str| {
        format!(
            "[source]\nkind = \"thingsboard\"\nurl = \"https://tb.example\"\n\
             access_token = {token}\ngateway_device = \"gw\"\n\n\
             [[device]]\nid = \"gw\"\ntype = \"gw\"\nhandler = \"command\"\n\
             update_command = [\"true\"]\n"
        )
    };
    let check = |body: &str, mode: u32, credentials: Option<&Path>| {
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut c = agent();
        c.env_remove("CREDENTIALS_DIRECTORY");
        if let Some(dir) = credentials {
            c.env("CREDENTIALS_DIRECTORY", dir);
        }
        let out = c
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("CANARY"), "{stderr}");
        (out.status.code(), stderr)
    };

    std::fs::write(tmp.path().join("tb.token"), "CANARY-file\n").unwrap();
    let (code, stderr) = check(&config("{ file = \"tb.token\" }"), 0o644, None);
    assert_eq!((code, stderr.as_str()), (Some(0), ""));

    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("tb"), "CANARY-credential").unwrap();
    let with_credential = config("{ credential = \"tb\" }");
    let (code, stderr) = check(&with_credential, 0o644, Some(creds.path()));
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    let (code, stderr) = check(&with_credential, 0o644, None);
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains("config.toml:4:")
            && stderr.contains(
                "source.access_token: credential \"tb\": $CREDENTIALS_DIRECTORY is not set"
            ),
        "{stderr}"
    );
    let (code, stderr) = check(&config("{ file = \"missing.token\" }"), 0o644, None);
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains("config.toml:4:") && stderr.contains("source.access_token: cannot read"),
        "{stderr}"
    );
    let (code, stderr) = check(&config("{ path = \"x\" }"), 0o644, None);
    assert_eq!(code, Some(78));
    assert!(stderr.contains("{ credential = \"name\" }"), "{stderr}");

    let literal = config("\"CANARY-literal\"");
    let (code, stderr) = check(&literal, 0o644, None);
    assert_eq!(code, Some(0));
    assert!(
        stderr.starts_with("warning: ")
            && stderr.contains("readable by every user (mode 0644)")
            && stderr.contains("source.access_token"),
        "{stderr}"
    );
    let (code, stderr) = check(&literal, 0o640, None);
    assert_eq!((code, stderr.as_str()), (Some(0), ""));

    let mqtt = "[source]\nkind = \"thingsboard\"\ntransport = \"mqtt\"\nhost = \"tb\"\n\
                tls = false\naccess_token = { file = \"tb.token\" }\ngateway_device = \"gw\"\n\n\
                [[device]]\nid = \"gw\"\ntype = \"gw\"\nhandler = \"command\"\n\
                update_command = [\"true\"]\n";
    let (code, stderr) = check(mqtt, 0o640, None);
    assert_eq!(code, Some(78));
    assert!(
        stderr.contains("config.toml:5:") && stderr.contains("https_only = false"),
        "{stderr}"
    );
    let opted_out = mqtt.replace("tls = false\n", "tls = false\nhttps_only = false\n");
    assert_eq!(check(&opted_out, 0o640, None).0, Some(0));
}
