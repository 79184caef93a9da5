//! `fota-agent status [--json]`: asks the running agent's status endpoint (the
//! address comes from the config's `[status]`) and prints a table, or the JSON as
//! received.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use fota_agent::engine::installed;
use fota_agent::status::Snapshot;
use fota_agent::store::now_secs;

const TIMEOUT: Duration = Duration::from_secs(10);

pub fn status(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = super::load(config)?;
    let status = &config.status;
    let body = match (status.listen, &status.socket) {
        (Some(addr), _) => {
            let addr = reachable(addr);
            let stream = TcpStream::connect_timeout(&addr, TIMEOUT).with_context(|| {
                format!("cannot reach the agent's status endpoint at {addr} (is it running?)")
            })?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            // With `allow_remote` reads need the token; sending it costs nothing otherwise.
            get(stream, "/status", status.token.as_deref())
                .with_context(|| format!("http://{addr}/status"))?
        }
        (None, Some(path)) => {
            let stream = UnixStream::connect(path).with_context(|| {
                format!(
                    "cannot reach the agent's status socket {} (is it running?)",
                    path.display()
                )
            })?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            get(stream, "/status", None).with_context(|| format!("{}", path.display()))?
        }
        (None, None) => bail!(
            "{}: the status endpoint is off ([status] listen = \"off\" and no socket)",
            config.path.display()
        ),
    };
    if json {
        println!("{}", body.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    let snapshot: Snapshot =
        serde_json::from_str(&body).context("the status endpoint's answer is not status JSON")?;
    print!("{}", table(&snapshot, now_secs()));
    Ok(ExitCode::SUCCESS)
}

/// A wildcard listen address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// The largest answer `status` reads: a status of thousands of devices is far
/// smaller; whatever answers on the port may not fill the memory.
const MAX_ANSWER: u64 = 4 << 20;

/// A minimal HTTP/1.0 GET: the answer's body when the status is 200.
fn get<S: Read + Write>(mut stream: S, path: &str, token: Option<&str>) -> anyhow::Result<String> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}Accept: application/json\r\n\r\n"
    )?;
    let mut answer = String::new();
    (&mut stream)
        .take(MAX_ANSWER + 1)
        .read_to_string(&mut answer)?;
    if answer.len() as u64 > MAX_ANSWER {
        bail!("the status endpoint's answer is larger than {MAX_ANSWER} bytes; not read");
    }
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("{status}: {body}");
    }
    Ok(body.to_string())
}

fn ago(now: u64, then: u64) -> String {
    let secs = now.saturating_sub(then);
    format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(secs))
    )
}

/// The snapshot as a table for humans.
pub fn table(s: &Snapshot, now: u64) -> String {
    let mut out = format!(
        "fota-agent {}, up {}\nsource: {}",
        s.agent.version,
        humantime::format_duration(Duration::from_secs(s.agent.uptime_seconds)),
        s.source.description
    );
    match (s.source.reachable, s.source.last_poll) {
        (Some(true), Some(t)) => out += &format!(" (reachable, polled {})", ago(now, t)),
        (Some(false), Some(t)) => {
            out += &format!(
                " (UNREACHABLE at the poll {}: {})",
                ago(now, t),
                s.source.error.as_deref().unwrap_or("?")
            )
        }
        _ => out += " (not polled yet)",
    }
    if !s.agent.firmware_authenticity.is_empty() {
        out += &format!("\nfirmware authenticity: {}", s.agent.firmware_authenticity);
    }
    out += "\n\n";
    let mut rows = vec![[
        "DEVICE".to_string(),
        "TYPE".into(),
        "VERSION".into(),
        "STATUS".into(),
        "AVAILABLE".into(),
        "UPDATE".into(),
        "LAST OUTCOME".into(),
    ]];
    for d in &s.devices {
        let update = match &d.update {
            None => "-".to_string(),
            Some(u) if u.pending => format!("{} pending", u.version),
            Some(u) => {
                let step = u.step.map_or("starting".to_string(), |s| s.to_string());
                let pct = u.percent.map_or(String::new(), |p| format!(" {p}%"));
                format!("{} {step}{pct} ({})", u.version, ago(now, u.started_at))
            }
        };
        let last = d.last_outcome.as_ref().map_or("-".to_string(), |o| {
            format!("{} {} ({})", o.version, o.outcome, ago(now, o.finished_at))
        });
        rows.push([
            d.id.clone(),
            d.device_type.clone(),
            installed::describe(d.current_version.as_deref(), d.installed_by_agent),
            match &d.needs_reflash {
                Some(r) => format!("NEEDS RE-FLASH {}", r.version),
                None => d.status.to_string(),
            },
            d.available
                .as_ref()
                .map_or("-".into(), |a| a.version.clone()),
            update,
            last,
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out += line.join("  ").trim_end();
        out += "\n";
    }
    for d in &s.devices {
        if let Some(lock) = &d.lock {
            out += &format!("{}: {lock}\n", d.id);
        }
        if let Some(e) = &d.error {
            out += &format!("{}: {e}\n", d.id);
        }
    }
    out
}
