//! A fleet of simulated ESP8266s running Espressif's IoT_Demo (light) firmware,
//! written from `user_esp_platform.c`: each connects to the cloud port,
//! activates (once) or identifies, pings, parses what the server sends per TCP
//! read with the firmware's `strstr` rules and offsets, downloads its other-slot
//! bin from the ROM port with HEAD then GET (HTTP/1.0, `Content-Length: `
//! case-sensitive), checks header and CRC as the upgrade library does, reports
//! `device_upgrade_success` / `device_upgrade_failed`, and on `sys_reboot` boots
//! the new slot and identifies again.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

/// What goes wrong on a device, to test the gateway's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The flash write fails: `device_upgrade_failed` after a good download.
    ReportFailed,
    /// Power is lost after half of the body: the device boots its old slot.
    PowerLossMidDownload,
    /// The download hangs after `HEAD`: no `GET`, no verdict, the connection
    /// to the cloud stays up.
    StallAfterHead,
}

/// One device's state, as the test observes it.
#[derive(Debug, Clone)]
pub struct DeviceState {
    /// 1 or 2: the user bin it runs.
    pub slot: u8,
    pub version: String,
    pub activated: bool,
    /// Boots so far.
    pub boots: u32,
    /// What the device did, in order ("HEAD user2.bin", "verdict success" …).
    pub log: Vec<String>,
}

pub struct SimDevice {
    pub key: String,
    pub fault: Fault,
    state: Mutex<DeviceState>,
    /// A verified download waiting for `sys_reboot` (upgrade flag, new slot, version).
    pending: Mutex<Option<(u8, String)>>,
}

impl SimDevice {
    pub fn new(key: &str, version: &str, fault: Fault) -> Arc<SimDevice> {
        Arc::new(SimDevice {
            key: key.to_string(),
            fault,
            state: Mutex::new(DeviceState {
                slot: 1,
                version: version.to_string(),
                activated: false,
                boots: 0,
                log: Vec::new(),
            }),
            pending: Mutex::new(None),
        })
    }

    pub fn state(&self) -> DeviceState {
        self.state.lock().unwrap().clone()
    }

    fn log(&self, line: String) {
        self.state.lock().unwrap().log.push(line);
    }
}

/// Where the devices find the "cloud": the cloud port and the ROM port.
#[derive(Debug, Clone, Copy)]
pub struct Cloud {
    pub cloud: SocketAddr,
    pub rom: SocketAddr,
}

/// Runs `device` until the returned task is aborted.
pub fn spawn(device: Arc<SimDevice>, cloud: Cloud) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            boot(&device, cloud).await;
        }
    })
}

/// Connects until the gateway listens (the device retries its connection).
async fn connect(addr: SocketAddr) -> TcpStream {
    loop {
        if let Ok(s) = TcpStream::connect(addr).await {
            let _ = s.set_nodelay(true);
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What ends a boot.
enum Reboot {
    /// `sys_reboot`, activation, power loss, a dropped connection.
    Now,
}

/// One power-on: connect, activate or identify, then serve the connection until
/// something reboots the device.
async fn boot(device: &Arc<SimDevice>, cloud: Cloud) -> Reboot {
    {
        let mut s = device.state.lock().unwrap();
        s.boots += 1;
        if let Some((slot, version)) = device.pending.lock().unwrap().take() {
            s.slot = slot;
            s.version = version;
        }
    }
    let stream = connect(cloud.cloud).await;
    let (mut reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let writer_task = tokio::spawn(write_all(writer, rx));
    let key = device.key.clone();
    let state = device.state();
    if !state.activated {
        activate(device, &mut reader, &tx, &state.version).await;
        // The light device restarts after its activation.
        writer_task.abort();
        return Reboot::Now;
    }
    let nonce = fastrand::u32(..) & 0x7FFF_FFFF;
    let _ = tx.send(format!(
        "{{\"nonce\": {nonce}, \"path\": \"/v1/device/identify\", \"method\": \"GET\",\
         \"meta\": {{\"Authorization\": \"token {key}\"}}}}\n"
    ));
    let mut downloads = Vec::new();
    let (reboot_tx, mut reboot_rx) = mpsc::unbounded_channel::<()>();
    loop {
        let read = tokio::select! {
            read = read_once(&mut reader) => read,
            _ = reboot_rx.recv() => None,
        };
        let Some(read) = read else { break };
        if read.contains("\"action\": \"sys_upgrade\"") {
            if let Some(at) = read.find("\"version\":") {
                // The firmware copies 16 bytes from 12 after the match and ends
                // the string at 15.
                let start = (at + 12).min(read.len());
                let version: String = read[start..].chars().take(15).collect();
                let nonce = parse_nonce(&read);
                let _ = tx.send(format!(
                    "{{\"status\": 200, \"nonce\": {nonce}, \"deliver_to_device\": true}}\n"
                ));
                downloads.push(tokio::spawn(upgrade(
                    device.clone(),
                    cloud.rom,
                    version,
                    tx.clone(),
                    reboot_tx.clone(),
                )));
            }
        } else if read.contains("\"action\": \"sys_reboot\"") {
            device.log("sys_reboot".into());
            tokio::time::sleep(Duration::from_millis(100)).await;
            break;
        }
    }
    for d in downloads {
        d.abort();
    }
    writer_task.abort();
    Reboot::Now
}

/// `ACTIVE_FRAME`, then reads until `"activate_status": 1` with its nonce.
async fn activate(
    device: &SimDevice,
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    tx: &mpsc::UnboundedSender<String>,
    version: &str,
) {
    let key = &device.key;
    let nonce = (fastrand::u32(..) & 0x7FFF_FFFF) as i64;
    let _ = tx.send(format!(
        "{{\"nonce\": {nonce},\"path\": \"/v1/device/activate/\", \"method\": \"POST\", \
         \"body\": {{\"encrypt_method\": \"PLAIN\", \"token\": \"{key}\", \"bssid\": \
         \"18:fe:34:00:00:01\",\"rom_version\":\"{version}\"}}, \"meta\": {{\"Authorization\": \
         \"token {key}\"}}}}\n"
    ));
    while let Some(read) = read_once(reader).await {
        if let Some(at) = read.find("\"activate_status\": ")
            && parse_nonce(&read) == nonce
            && read[at + 19..].starts_with('1')
        {
            device.state.lock().unwrap().activated = true;
            device.log("activated".into());
            return;
        }
    }
}

/// One server message per TCP read, as the firmware's receive callback sees it.
async fn read_once(reader: &mut tokio::net::tcp::OwnedReadHalf) -> Option<String> {
    let mut buf = [0u8; 1460];
    match reader.read(&mut buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
    }
}

async fn write_all(mut writer: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<String>) {
    while let Some(m) = rx.recv().await {
        if writer.write_all(m.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// `user_esp_platform_parse_nonce`: the digits after `"nonce": ` up to `,`, `}`
/// or `]`, through `atoi`.
pub fn parse_nonce(buf: &str) -> i64 {
    let Some(at) = buf.find("\"nonce\": ") else {
        return 0;
    };
    let rest = &buf[at + 9..];
    let end = [',', '}', ']']
        .iter()
        .filter_map(|c| rest.find(*c))
        .min()
        .unwrap_or(rest.len());
    let digits: String = rest[..end]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().unwrap_or(0)
}

/// `user_esp_platform_upgrade_begin` + the SDK's upgrade library: download the
/// other slot's bin, check it, report the verdict on the cloud connection.
async fn upgrade(
    device: Arc<SimDevice>,
    rom: SocketAddr,
    version: String,
    tx: mpsc::UnboundedSender<String>,
    reboot: mpsc::UnboundedSender<()>,
) {
    let state = device.state();
    let (file, slot) = if state.slot == 1 {
        ("user2.bin", 2)
    } else {
        ("user1.bin", 1)
    };
    let request = format!(
        "GET /v1/device/rom/?action=download_rom&version={version}&filename={file} HTTP/1.0\r\n\
         Host: {rom}\r\nConnection: keep-alive\r\nCache-Control: no-cache\r\nAccept: */*\r\n\
         Authorization: token {}\r\nAccept-Encoding: gzip,deflate,sdch\r\n\r\n",
        device.key
    );
    let verdict = match download(&device, rom, &request, file).await {
        Some(body) => check(&body, slot),
        None if device.fault == Fault::PowerLossMidDownload => {
            device.log("power loss".into());
            let _ = reboot.send(());
            return;
        }
        None => false,
    };
    let success = verdict && device.fault != Fault::ReportFailed;
    device.log(format!(
        "verdict {}",
        if success { "success" } else { "failed" }
    ));
    if success {
        *device.pending.lock().unwrap() = Some((slot, version.clone()));
    }
    let action = if success {
        "device_upgrade_success"
    } else {
        "device_upgrade_failed"
    };
    let _ = tx.send(format!(
        "{{\"path\": \"/v1/messages/\", \"method\": \"POST\", \"meta\": {{\"Authorization\": \
         \"token {}\"}},\"get\":{{\"action\":\"{action}\"}},\"body\":{{\"pre_rom_version\":\"{}\",\
         \"rom_version\":\"{version}\"}}}}\n",
        device.key, state.version
    ));
}

/// HEAD for the length, then GET for the body; `None` when either fails (or
/// power is lost half-way).
async fn download(device: &SimDevice, rom: SocketAddr, get: &str, file: &str) -> Option<Vec<u8>> {
    let head = get.replacen("GET ", "HEAD ", 1);
    let (status, length, _) = exchange(rom, &head, 0).await?;
    device.log(format!("HEAD {file} {status}"));
    let length = length.filter(|_| status == 200)?;
    if device.fault == Fault::StallAfterHead {
        std::future::pending::<()>().await;
    }
    let want = match device.fault {
        Fault::PowerLossMidDownload => length / 2,
        _ => length,
    };
    let (status, _, body) = exchange(rom, get, want).await?;
    device.log(format!("GET {file} {status} {} bytes", body.len()));
    if device.fault == Fault::PowerLossMidDownload {
        return None;
    }
    (status == 200 && body.len() == length).then_some(body)
}

/// Sends `request`, reads the head and up to `want` body bytes (half of it for
/// a power loss is decided by the caller).
async fn exchange(
    rom: SocketAddr,
    request: &str,
    want: usize,
) -> Option<(u16, Option<usize>, Vec<u8>)> {
    let mut s = TcpStream::connect(rom).await.ok()?;
    s.write_all(request.as_bytes()).await.ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 1460];
    let head_end = loop {
        if let Some(p) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    // The library matches this exact spelling.
    let length = head
        .find("Content-Length: ")
        .and_then(|at| head[at + 16..].split("\r\n").next()?.trim().parse().ok());
    let mut body = data[head_end..].to_vec();
    while body.len() < want {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some((status, length, body))
}

/// The upgrade library's check: `EA 04 00 <slot>` / `E9 03 00 <slot>`, then the
/// CRC-32 (init 0xFFFFFFFF, no final XOR) in the last four bytes.
fn check(body: &[u8], slot: u8) -> bool {
    if body.len() < 8 {
        return false;
    }
    let header_ok = matches!(body[..4], [0xEA, 4, 0, s] | [0xE9, 3, 0, s] if s == slot);
    let (data, tail) = body.split_at(body.len() - 4);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    header_ok && stored == crc32fast::hash(data) ^ 0xFFFF_FFFF
}

/// A user bin for `slot` with `len` bytes of code and a correct CRC.
pub fn user_bin(slot: u8, len: usize, seed: u8) -> Vec<u8> {
    let mut v = vec![0xEA, 4, 0, slot, 0x04, 0x00, 0x10, 0x40];
    v.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    let crc = crc32fast::hash(&v) ^ 0xFFFF_FFFF;
    v.extend(crc.to_le_bytes());
    v
}
