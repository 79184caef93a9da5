//! Issue #12, item 9, through the binary: a flood of idle, half-sent requests
//! never exhausts the agent's file descriptors (`[status] max_connections`), is
//! closed (eviction at the cap, then `[status] header_timeout`), and `/status`
//! still answers meanwhile.

mod process;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use process::{exit_within, free_port, http_get, start_run};

const CAP: usize = 8;
const FLOOD: usize = 300;

/// Open file descriptors of `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn half_sent_requests_are_capped_and_closed_and_status_still_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().display();
    std::fs::create_dir_all(tmp.path().join("firmware")).unwrap();
    let port = free_port();
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{dir}/state\"\npoll_interval = \"1h\"\n\
             [source]\nkind = \"directory\"\npath = \"{dir}/firmware\"\n\
             [status]\nlisten = \"127.0.0.1:{port}\"\nmax_connections = {CAP}\n\
             header_timeout = \"2s\"\n"
        ),
    )
    .unwrap();
    let mut agent = start_run(&config, Stdio::null());
    let pid = agent.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(port, "/status").is_none() {
        assert!(Instant::now() < deadline, "the endpoint never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let baseline = fds(pid);

    let mut flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /status HTTP/1.1\r\nHost: loc").unwrap();
            s
        })
        .collect();
    // While the flood waits, the agent holds at most CAP of them (plus the one
    // being accepted), and /status answers.
    let mut answered = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answered {
        assert!(
            Instant::now() < deadline,
            "/status never answered under the flood"
        );
        let open = fds(pid);
        assert!(
            open <= baseline + CAP + 2,
            "{open} fds open, {baseline} before the flood"
        );
        answered = http_get(port, "/status").is_some();
    }
    // Every flood connection is closed by the agent: evicted at the cap, or
    // after the header timeout.
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in &mut flood {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(_) => {}
            }
            assert!(
                Instant::now() < deadline,
                "a half-sent connection stays open"
            );
        }
    }
    assert!(fds(pid) <= baseline + 1);
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let status = exit_within(&mut agent, Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
