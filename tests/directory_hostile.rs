//! Issue #12, item 5, through the binary: a hostile firmware folder (a FIFO named
//! `*.properties`, a symlink to `/dev/zero`, an image symlink leaving the folder)
//! never blocks or grows a cycle and offers nothing it should not; a missing
//! firmware directory is reported everywhere; SIGTERM during a cycle ends the
//! process promptly.

mod process;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use process::{
    exit_within, free_port, http_get, start_run, text, wait_for, with_config, write_exec,
};

/// A command-handler device `dev` of type `t` running 1.0 (its version command
/// runs `version_before` first), the firmware directory `<tmp>/firmware`, the
/// status endpoint on `port`.
fn setup(tmp: &Path, port: u16, version_before: &str) -> PathBuf {
    let dir = tmp.display();
    write_exec(
        &tmp.join("version.sh"),
        &format!("{version_before}cat {dir}/version 2>/dev/null || echo 1.0\n"),
    );
    write_exec(
        &tmp.join("update.sh"),
        &format!("echo updated >> {dir}/calls\necho \"$FOTA_VERSION\" > {dir}/version\n"),
    );
    let config = tmp.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{dir}/state\"\npoll_interval = \"1h\"\n\
             [status]\nlisten = \"127.0.0.1:{port}\"\n\
             [source]\nkind = \"directory\"\npath = \"{dir}/firmware\"\n\
             [[device]]\nid = \"dev\"\ntype = \"t\"\nhandler = \"command\"\n\
             version_command = [\"{dir}/version.sh\"]\nupdate_command = [\"{dir}/update.sh\"]\n"
        ),
    )
    .unwrap();
    config
}

/// Runs `agent … args` to its end, which must come within 30 s.
fn finish(config: &Path, args: &[&str]) -> Output {
    let mut child = with_config(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    if exit_within(&mut child, Duration::from_secs(30)).is_none() {
        let _ = child.kill();
        panic!("`{args:?}` (pid {pid}) still runs after 30 s");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn fifo_dev_zero_and_outside_symlinks_are_skipped_with_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path(), free_port(), "");
    let fw = tmp.path().join("firmware/t");
    std::fs::create_dir_all(&fw).unwrap();
    nix::unistd::mkfifo(&fw.join("a-fifo.properties"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::os::unix::fs::symlink("/dev/zero", fw.join("b-zero.properties")).unwrap();
    std::fs::write(
        fw.join("c-outside.properties"),
        "version = 9.0\nimage = passwd.bin\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", fw.join("passwd.bin")).unwrap();
    std::fs::write(fw.join("d-big.properties"), "# x\n".repeat(20_000)).unwrap();
    // A symlink that stays inside is fine.
    std::fs::write(fw.join("real-2.bin"), b"firmware 2.0").unwrap();
    std::os::unix::fs::symlink("real-2.bin", fw.join("fw-2.bin")).unwrap();
    std::fs::write(
        fw.join("e-good.properties"),
        "version = 2.0\nimage = fw-2.bin\n",
    )
    .unwrap();

    let out = finish(&config, &["check"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("would get=2.0"), "{log}");
    for reason in [
        "a-fifo.properties: not a regular file (a FIFO)",
        "b-zero.properties: resolves to /dev/zero, outside the firmware directory",
        "c-outside.properties:2: image: passwd.bin: resolves to /etc/passwd, outside",
        "d-big.properties: larger than the 64 KiB limit",
    ] {
        assert!(log.contains(reason), "no {reason:?} in\n{log}");
    }

    // The cycle installs the good one only, and ends.
    let out = finish(&config, &["run", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let calls = std::fs::read_to_string(tmp.path().join("calls")).unwrap();
    assert_eq!(calls, "updated\n");
}

#[test]
fn a_missing_firmware_directory_is_reported_by_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = setup(tmp.path(), port, "");
    let missing = format!(
        "firmware directory {}/firmware does not exist",
        tmp.path().display()
    );

    let out = finish(&config, &["check-config"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("warning: source: {missing}")),
        "{}",
        text(&out)
    );

    let out = finish(&config, &["check"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&missing), "{}", text(&out));

    let log = tmp.path().join("run.log");
    let mut run = start_run(&config, std::fs::File::create(&log).unwrap().into());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = http_get(port, "/status").filter(|s| s.contains("does not exist")) {
            break s;
        }
        assert!(Instant::now() < deadline, "no source error in /status");
        std::thread::sleep(Duration::from_millis(50));
    };
    let body: serde_json::Value =
        serde_json::from_str(status.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let error = body["source"]["error"].as_str().unwrap_or_default();
    assert!(error.contains(&missing), "{body:#}");
    kill(Pid::from_raw(run.id() as i32), Signal::SIGTERM).unwrap();
    assert!(exit_within(&mut run, Duration::from_secs(20)).is_some_and(|s| s.success()));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains(&missing), "{log}");
}

#[test]
fn sigterm_during_a_cycle_ends_the_process_promptly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().display();
    // Once the version is read the cycle reads the folder, where a FIFO waits
    // (it blocked the cycle forever, and so the exit).
    let config = setup(
        tmp.path(),
        free_port(),
        &format!("echo $$ > {dir}/v.tmp; mv {dir}/v.tmp {dir}/version-pid\n"),
    );
    let fw = tmp.path().join("firmware/t");
    std::fs::create_dir_all(&fw).unwrap();
    nix::unistd::mkfifo(&fw.join("fifo.properties"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut run = start_run(&config, Stdio::null());
    wait_for(&tmp.path().join("version-pid"));
    kill(Pid::from_raw(run.id() as i32), Signal::SIGTERM).unwrap();
    let status = exit_within(&mut run, Duration::from_secs(20));
    if status.is_none() {
        let _ = run.kill();
    }
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
