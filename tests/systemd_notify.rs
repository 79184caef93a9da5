//! systemd integration of the real binary against fakes bound by the test: a
//! `NOTIFY_SOCKET` (READY=1 only once the status endpoint answers, STATUS= lines,
//! WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 and a clean exit on SIGTERM)
//! and a journald socket (native-protocol entries with the update's fields and the
//! outcome's MESSAGE_ID).

mod process;

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fota_agent::logging::{self, MESSAGE_ID_FAILED, MESSAGE_ID_SUCCESS};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use process::{agent, exit_within, free_port, http_get, wait_for, write_exec};

/// Devices of type `t` (one per `(id, update script body)`), running 1.0, offered
/// 2.0; the status endpoint on `port`.
fn setup(dir: &Path, port: u16, devices: &[(&str, &str)]) -> PathBuf {
    let d = dir.display();
    let fw = dir.join("firmware/t");
    std::fs::create_dir_all(&fw).unwrap();
    std::fs::write(fw.join("fw.bin"), "firmware 2.0\n".repeat(1000)).unwrap();
    std::fs::write(fw.join("fw.properties"), "version = 2.0\nimage = fw.bin\n").unwrap();
    let mut config = format!(
        "[agent]\nstate_dir = \"{d}/state\"\npoll_interval = \"1h\"\n\
         [source]\nkind = \"directory\"\npath = \"{d}/firmware\"\n\
         [status]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    for (id, update) in devices {
        write_exec(
            &dir.join(format!("{id}-version.sh")),
            &format!("cat {d}/{id}-version 2>/dev/null || echo 1.0\n"),
        );
        write_exec(&dir.join(format!("{id}-update.sh")), update);
        config += &format!(
            "[[device]]\nid = \"{id}\"\ntype = \"t\"\nhandler = \"command\"\n\
             version_command = [\"{d}/{id}-version.sh\"]\n\
             update_command = [\"{d}/{id}-update.sh\"]\n"
        );
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Receives datagrams on a bound socket in a thread, with their arrival time.
fn listen(path: &Path) -> mpsc::Receiver<(Instant, Vec<u8>)> {
    let socket = UnixDatagram::bind(path).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = socket.recv(&mut buf) {
            if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                return;
            }
        }
    });
    rx
}

/// `run` with a fake `NOTIFY_SOCKET` in `dir` and `WATCHDOG_USEC=watchdog_usec`,
/// stderr piped; what reaches the socket.
fn run_notified(
    dir: &Path,
    config: &Path,
    watchdog_usec: &str,
) -> (std::process::Child, mpsc::Receiver<(Instant, Vec<u8>)>) {
    let notify_path = dir.join("notify.sock");
    let notes = listen(&notify_path);
    let child = agent()
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", watchdog_usec)
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, notes)
}

/// SIGTERM, then the exit (`None`: none within 20 s, killed) and the stderr.
fn terminate(child: &mut std::process::Child) -> (Option<std::process::ExitStatus>, String) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = exit_within(child, Duration::from_secs(20));
    if status.is_none() {
        let _ = child.kill();
    }
    let mut log = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut log).unwrap();
    }
    (status, log)
}

#[test]
fn ready_status_watchdog_and_stopping_reach_the_notify_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = dir.display();
    let port = free_port();
    // The update holds until the test has seen pings while it runs (the loop
    // only paces the script's look at the file).
    let config = setup(
        dir,
        port,
        &[(
            "dev",
            &format!(
                "echo 'PROGRESS 50'\nwhile [ ! -e {d}/go ]; do sleep 0.05; done\n\
                 echo \"$FOTA_VERSION\" > {d}/dev-version\n"
            ),
        )],
    );
    let (mut child, notes) = run_notified(dir, &config, "400000");

    // READY=1 comes first, and by then the endpoint answers.
    let (_, first) = notes.recv_timeout(Duration::from_secs(30)).unwrap();
    let first = String::from_utf8(first).unwrap();
    assert!(first.contains("READY=1\n"), "{first:?}");
    assert!(first.contains("STATUS="), "{first:?}");
    assert!(
        http_get(port, "/status").is_some(),
        "READY=1 before the endpoint answers"
    );

    // The update shows in STATUS=, and the pings go on while it runs.
    let mut seen = Vec::new();
    let updating = |d: &str| {
        d.strip_prefix("STATUS=")
            .is_some_and(|s| s.starts_with("dev: UPDATING") && s.contains("2.0"))
    };
    next_until(&notes, &mut seen, updating);
    for _ in 0..3 {
        next_until(&notes, &mut seen, |d| d == "WATCHDOG=1\n");
    }
    std::fs::write(dir.join("go"), "").unwrap();
    next_until(&notes, &mut seen, |d| {
        d.trim_end() == "STATUS=idle: 1 device up to date"
    });

    let (status, log) = terminate(&mut child);
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    let rest: Vec<String> = notes
        .try_iter()
        .map(|(_, d)| String::from_utf8(d).unwrap())
        .collect();
    assert!(
        rest.iter().any(|d| d.starts_with("STOPPING=1\n")),
        "{rest:?}\n{log}"
    );
}

/// Receives notifications into `seen` until one satisfies `want` (30 s
/// deadline, then a panic listing what came).
fn next_until(
    notes: &mpsc::Receiver<(Instant, Vec<u8>)>,
    seen: &mut Vec<String>,
    want: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((_, d)) = notes.recv_timeout(left) else {
            panic!("not among the notifications: {seen:#?}");
        };
        seen.push(String::from_utf8(d).unwrap());
        if want(seen.last().unwrap()) {
            return;
        }
    }
}

/// `WATCHDOG_PID` naming another process: no pings. Measured in the agent's own
/// poll cycles (a version read each, 1 s apart) rather than a sleep: pings at
/// 0.1 s would have come many times over, and every datagram sent before
/// STOPPING=1 arrives before it.
#[test]
fn watchdog_pid_of_another_process_means_no_pings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = dir.display();
    let port = free_port();
    let config = setup(dir, port, &[("dev", "/bin/true\n")]);
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("poll_interval = \"1h\"", "poll_interval = \"1s\""),
    )
    .unwrap();
    write_exec(
        &dir.join("dev-version.sh"),
        &format!("echo read >> {d}/reads\necho 2.0\n"),
    );
    let notify_path = dir.join("notify.sock");
    let notes = listen(&notify_path);
    let mut child = agent()
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", "1")
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (_, first) = notes.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(String::from_utf8_lossy(&first).contains("READY=1"));
    let reads = || {
        std::fs::read_to_string(dir.join("reads"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while reads() < 3 {
        assert!(Instant::now() < deadline, "{} version reads", reads());
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let mut seen = Vec::new();
    next_until(&notes, &mut seen, |d| d.starts_with("STOPPING=1"));
    assert!(
        !seen.iter().any(|d| d.starts_with("WATCHDOG=1")),
        "{seen:?}"
    );
    assert!(child.wait().unwrap().success());
}

/// A cycle stuck in one await (here a version command that never answers,
/// allowed an hour, while `update_timeout` is 2 s) stops the pings although the
/// engine's loop still runs; SIGTERM still ends the process.
#[test]
fn a_stuck_cycle_stops_the_watchdog_pings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = dir.display();
    std::fs::create_dir_all(dir.join("firmware/t")).unwrap();
    write_exec(
        &dir.join("version.sh"),
        &format!("echo $$ > {d}/v.tmp; mv {d}/v.tmp {d}/version-pid\nexec sleep 1000\n"),
    );
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{d}/state\"\npoll_interval = \"1h\"\nupdate_timeout = \"2s\"\n\
             [source]\nkind = \"directory\"\npath = \"{d}/firmware\"\n\
             [status]\nlisten = \"off\"\n\
             [[device]]\nid = \"dev\"\ntype = \"t\"\nhandler = \"command\"\n\
             command_timeout = \"1h\"\nversion_command = [\"{d}/version.sh\"]\n\
             update_command = [\"/bin/true\"]\n"
        ),
    )
    .unwrap();
    let (mut child, notes) = run_notified(dir, &config, "400000");
    wait_for(&dir.join("version-pid"));
    // Pings (every 0.2 s) stop once the step is 2 s old: wait for a silence of
    // 2 s, which the pinger never leaves while the agent is alive.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "WATCHDOG=1 never stopped");
        match notes.recv_timeout(Duration::from_secs(2)) {
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(e) => panic!("{e}"),
            Ok(_) => {}
        }
    }
    let (status, log) = terminate(&mut child);
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    let stuck = log.find("cycle stuck (dev: reading the version for ");
    assert!(
        stuck.is_some_and(|at| log[at..].contains("not pinging the watchdog")),
        "{log}"
    );
}

/// The engine's heartbeat (what gates the watchdog ping) beats while its loop
/// runs and stops with it.
#[tokio::test]
async fn engine_heartbeat_stops_when_its_loop_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path(), 0, &[]);
    let config = fota_agent::config::Config::load(&config).unwrap();
    let engine = fota_agent::engine::Engine::from_config(&config).unwrap();
    engine.set_heartbeat(Duration::from_millis(20));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn({
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        async move { engine.run(shutdown).await }
    });
    // Beating: a beat is seen that is recent (the loop beats every 20 ms).
    process::until("a recent beat", || {
        engine.since_heartbeat() < Duration::from_millis(150)
    })
    .await;
    shutdown.cancel();
    run.await.unwrap();
    // Stopped: the time since the last beat only grows from here.
    let stopped = engine.since_heartbeat();
    process::until("the beat to age", || {
        engine.since_heartbeat() >= stopped + Duration::from_millis(250)
    })
    .await;
}

#[test]
fn journald_gets_update_results_with_fields_and_message_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = dir.display();
    let config = setup(
        dir,
        free_port(),
        &[
            (
                "good",
                &format!("echo \"$FOTA_VERSION\" > {d}/good-version\n"),
            ),
            ("bad", "echo 'flash write error at 0x1000' >&2\nexit 3\n"),
        ],
    );
    let journal_path = dir.join("journal.sock");
    let entries = listen(&journal_path);
    let out = agent()
        .env("FOTA_AGENT_JOURNAL_SOCKET", &journal_path)
        .arg("--config")
        .arg(&config)
        .args(["run", "--once"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "one update failed: {stderr}");
    // Everything went to the journal.
    assert!(!stderr.contains("update succeeded"), "{stderr}");

    let entries: Vec<Vec<(String, String)>> = entries
        .try_iter()
        .map(|(_, d)| logging::decode(&d))
        .collect();
    let get =
        |e: &[(String, String)], k: &str| e.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let find = |device: &str, outcome: &str| {
        entries
            .iter()
            .find(|e| {
                get(e, "DEVICE_ID").as_deref() == Some(device)
                    && get(e, "OUTCOME").as_deref() == Some(outcome)
            })
            .unwrap_or_else(|| panic!("no {outcome} entry for {device} in {entries:#?}"))
    };
    for e in &entries {
        assert_eq!(get(e, "SYSLOG_IDENTIFIER").as_deref(), Some("fota-agent"));
        assert!(get(e, "MESSAGE").is_some() && get(e, "PRIORITY").is_some());
    }

    let good = find("good", "success");
    assert_eq!(get(good, "FIRMWARE_VERSION").as_deref(), Some("2.0"));
    assert_eq!(get(good, "MESSAGE_ID").as_deref(), Some(MESSAGE_ID_SUCCESS));
    assert_eq!(get(good, "PRIORITY").as_deref(), Some("6"));

    let bad = find("bad", "failed");
    assert_eq!(get(bad, "FIRMWARE_VERSION").as_deref(), Some("2.0"));
    assert_eq!(get(bad, "MESSAGE_ID").as_deref(), Some(MESSAGE_ID_FAILED));
    assert_eq!(get(bad, "PRIORITY").as_deref(), Some("3"));
    let error = get(bad, "ERROR").unwrap();
    assert!(error.contains("flash write error"), "{error}");

    // Progress entries carry the step and percent.
    assert!(
        entries
            .iter()
            .any(|e| get(e, "DEVICE_ID").as_deref() == Some("good")
                && get(e, "STEP").as_deref() == Some("DOWNLOADING")
                && get(e, "PERCENT").as_deref() == Some("100")),
        "{entries:#?}"
    );
    // Only update results carry a MESSAGE_ID.
    let with_id = entries
        .iter()
        .filter(|e| get(e, "MESSAGE_ID").is_some())
        .count();
    assert_eq!(with_id, 2, "{entries:#?}");
}
