//! The ROM download port (80 in the firmware): the SDK's upgrade library asks
//! `HEAD` for the length, then `GET /v1/device/rom/?action=download_rom&version=
//! <v>&filename=user<1|2>.bin HTTP/1.0` with `Authorization: token <key>`, and
//! reads `Content-Length: ` case-sensitively. Only the bins offered to that key
//! in that version are served; bytes sent are reported as download progress.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::gateway::Gateway;
use super::link::{Link, LinkEvent, Offer};
use super::user_bin::Slot;

const MAX_HEAD: usize = 8192;
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const CHUNK: usize = 4096;

/// A request the server answers with a body.
struct Download {
    link: Arc<Link>,
    offer: Arc<Offer>,
    slot: Slot,
    head_only: bool,
}

pub async fn request(mut stream: TcpStream, gateway: Arc<Gateway>) -> std::io::Result<()> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Err(std::io::Error::other("no request head within 30 s")),
    };
    let download = match route(&head, &gateway) {
        Ok(d) => d,
        Err((status, why)) => {
            let answer = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{why}",
                why.len()
            );
            return stream.write_all(answer.as_bytes()).await;
        }
    };
    send(stream, download).await
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head over 8 KiB"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other(
                "closed before the request head ended",
            ));
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Which bin the request asks for, or the status and reason to refuse it.
fn route(head: &str, gateway: &Gateway) -> Result<Download, (&'static str, String)> {
    let mut lines = head.split("\r\n");
    let mut request = lines.next().unwrap_or("").split(' ');
    let (method, target) = (request.next().unwrap_or(""), request.next().unwrap_or(""));
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(("405 Method Not Allowed", format!("method {method:?}\n"))),
    };
    let key = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("token"))
        .map(|(_, key)| key.trim());
    let Some(link) = key.and_then(|k| gateway.link(k)) else {
        return Err(("401 Unauthorized", "unknown device key\n".into()));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    };
    if path != "/v1/device/rom/" || param("action") != Some("download_rom") {
        return Err(("404 Not Found", format!("no such resource {path:?}\n")));
    }
    let Some(offer) = link.offer() else {
        return Err((
            "404 Not Found",
            "no firmware is offered to this device\n".into(),
        ));
    };
    if param("version") != Some(offer.version.as_str()) {
        let asked = param("version").unwrap_or("");
        return Err((
            "404 Not Found",
            format!("version {asked:?} is not offered\n"),
        ));
    }
    let Some(slot) = param("filename").and_then(Slot::from_file_name) else {
        return Err((
            "404 Not Found",
            "filename must be user1.bin or user2.bin\n".into(),
        ));
    };
    Ok(Download {
        link,
        offer,
        slot,
        head_only,
    })
}

async fn send(mut stream: TcpStream, d: Download) -> std::io::Result<()> {
    let (path, total) = d.offer.file(d.slot).clone();
    let head = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    if d.head_only {
        return Ok(());
    }
    tracing::info!(device = %d.link.id, file = d.slot.file_name(), version = %d.offer.version,
        "esp8266-wifi device downloads its bin");
    let mut file = tokio::fs::File::open(&path).await?;
    let mut buf = vec![0u8; CHUNK];
    let (mut done, mut reported) = (0u64, None);
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n]).await?;
        done += n as u64;
        // Whole percents only: an update's event channel stays short.
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        if reported != Some(pct) {
            reported = Some(pct);
            d.link.emit(LinkEvent::Served {
                slot: d.slot,
                done,
                total,
            });
        }
    }
    stream.shutdown().await
}
