//! The cloud port (IoT_Demo's `iot.espressif.cn:8000`): devices connect, activate
//! or identify, ping, answer RPCs and report their upgrade verdict. Each
//! connection is bound to a device by the key of its first frame.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::frames::{self, DeviceMessage, Frame};
use super::gateway::Gateway;
use super::link::{Link, LinkEvent};

/// A device message is one short JSON line; more without a newline is not one.
const MAX_LINE: usize = 4096;
/// Three missed 50 s beacons: the connection is dead.
const IDLE: Duration = Duration::from_secs(150);
/// The device parses each TCP read as one message (`strstr` over the buffer):
/// a gap between server messages keeps two of them out of one read.
const PACING: Duration = Duration::from_millis(50);

/// The device bound to a connection, and the connection's generation.
type Bound = Option<(Arc<Link>, u64)>;

pub async fn connection(stream: TcpStream, gateway: Arc<Gateway>) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let write_task = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if writer.write_all(message.as_bytes()).await.is_err() {
                break;
            }
            tokio::time::sleep(PACING).await;
        }
    });
    let mut bound: Bound = None;
    let result = read_lines(&mut reader, |line| {
        handle(line, &gateway, &tx, &mut bound);
    })
    .await;
    if let Some((link, generation)) = &bound {
        link.detach(*generation);
    }
    write_task.abort();
    result
}

/// Calls `on_line` for every `\n`-terminated line until the peer closes or
/// goes quiet for [`IDLE`].
async fn read_lines(
    reader: &mut (impl AsyncReadExt + Unpin),
    mut on_line: impl FnMut(&str),
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1460];
    loop {
        let n = match tokio::time::timeout(IDLE, reader.read(&mut chunk)).await {
            Ok(read) => read?,
            Err(_) => return Err(std::io::Error::other("no message for 150 s")),
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            on_line(String::from_utf8_lossy(&line).trim());
        }
        if buf.len() > MAX_LINE {
            return Err(std::io::Error::other("line longer than 4096 bytes"));
        }
    }
}

fn handle(line: &str, gateway: &Gateway, tx: &mpsc::UnboundedSender<String>, bound: &mut Bound) {
    if line.is_empty() {
        return;
    }
    let frame = match frames::parse(line) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("esp8266-wifi: ignoring a malformed device message: {e}");
            return;
        }
    };
    if bound.is_none()
        && let Some(key) = &frame.key
    {
        match gateway.link(key) {
            Some(link) => {
                let generation = link.attach(tx.clone());
                tracing::info!(device = %link.id, "esp8266-wifi device connected");
                *bound = Some((link, generation));
            }
            None => {
                tracing::warn!("esp8266-wifi: a device with an unknown key connected");
                let _ = tx.send("{\"status\": 403, \"message\": \"unknown device key\"}\n".into());
                return;
            }
        }
    }
    let Some((link, generation)) = bound else {
        return;
    };
    respond(frame, link, *generation, tx);
}

fn respond(frame: Frame, link: &Link, generation: u64, tx: &mpsc::UnboundedSender<String>) {
    let reply = |m: String| {
        let _ = tx.send(m);
    };
    match frame.message {
        DeviceMessage::Activate { nonce, rom_version } => {
            if let Some(v) = rom_version {
                link.set_version(&v);
            }
            reply(frames::activated(nonce));
        }
        DeviceMessage::Identify => {
            reply(frames::IDENTIFIED.into());
            link.ready(generation);
        }
        DeviceMessage::Ping => {
            reply(frames::PING_SUCCESS.into());
            link.ready(generation);
        }
        DeviceMessage::Upgrade {
            success,
            pre_rom_version,
            rom_version,
        } => {
            // The version changes when the device comes back from its reboot.
            reply(frames::MESSAGE_SUCCESS.into());
            link.emit(LinkEvent::Upgrade {
                success,
                pre_rom_version,
                rom_version,
            });
        }
        DeviceMessage::Ack { nonce } => {
            tracing::debug!(device = %link.id, nonce, "esp8266-wifi RPC acknowledged");
        }
        DeviceMessage::Other => {}
    }
}
