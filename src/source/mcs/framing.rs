//! Message boundaries on the MCS command channel. The command server writes one
//! message per TCP write **without a line ending** (MediaTek's LinkIt 7688
//! tutorial reads with `recv(1024)`; the LinkIt 7697 `MCS.cpp` splits on the next
//! `deviceId,deviceKey,`), and echoes the device's heartbeats back. TCP may split
//! or join writes, so a message ends at the next `deviceId,deviceKey,` (a new
//! message), at a line ending (`\n`, `\r\n`: accepted too), or when the server
//! has been quiet for [`QUIET`] after it.

use std::time::Duration;

/// Bytes that end a message when no more follow this soon.
pub const QUIET: Duration = Duration::from_millis(200);

/// Splits the command server's byte stream into messages.
#[derive(Debug)]
pub struct Framer {
    /// `deviceId,deviceKey,`: how every message of this connection starts.
    start: Vec<u8>,
    buf: Vec<u8>,
    max: usize,
    /// The current message outgrew `max`: drop bytes until the next boundary.
    skipping: bool,
}

/// What [`Framer::push`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Framed {
    pub messages: Vec<Vec<u8>>,
    /// A message longer than the limit was dropped.
    pub oversized: bool,
}

impl Framer {
    pub fn new(device_id: &str, device_key: &str, max: usize) -> Framer {
        Framer {
            start: format!("{device_id},{device_key},").into_bytes(),
            buf: Vec::new(),
            max,
            skipping: false,
        }
    }

    /// Takes bytes read from the connection; returns the messages they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Framed {
        self.buf.extend_from_slice(bytes);
        let mut out = Framed::default();
        while let Some(end) = self.boundary() {
            let message: Vec<u8> = self.buf.drain(..end).collect();
            self.emit(message, &mut out);
        }
        if self.buf.len() > self.max {
            self.buf.clear();
            self.skipping = true;
            out.oversized = true;
        }
        out
    }

    /// The server went quiet: what is buffered is a whole message.
    pub fn flush(&mut self) -> Framed {
        let mut out = Framed::default();
        let message = std::mem::take(&mut self.buf);
        self.emit(message, &mut out);
        self.skipping = false;
        out
    }

    /// Whether bytes wait for a boundary (then the caller flushes after [`QUIET`]).
    pub fn pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Where the first buffered message ends: after a `\n`, or where the next
    /// message's `deviceId,deviceKey,` starts (not at offset 0).
    fn boundary(&self) -> Option<usize> {
        let newline = self.buf.iter().position(|b| *b == b'\n').map(|i| i + 1);
        let next = (1..self.buf.len()).find(|&i| self.buf[i..].starts_with(&self.start));
        match (newline, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn emit(&mut self, message: Vec<u8>, out: &mut Framed) {
        let ends_line = message.ends_with(b"\n");
        if self.skipping {
            // The tail of an oversized message; a new one starts at a boundary.
            self.skipping = !ends_line && !message.starts_with(&self.start);
            if self.skipping {
                return;
            }
        }
        let trimmed = message.trim_ascii();
        if !trimmed.is_empty() {
            out.messages.push(trimmed.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(f: Framed) -> Vec<String> {
        f.messages
            .into_iter()
            .map(|m| String::from_utf8(m).unwrap())
            .collect()
    }

    const PUSH: &str = "D1,K1,1513132150790,FOTA,2.0,null,https://cdn.example/a.bin";

    #[test]
    fn messages_without_line_endings_split_at_the_next_message() {
        let mut f = Framer::new("D1", "K1", 1024);
        // A push, then the echoed heartbeat glued to it in one read.
        let read = format!("{PUSH}D1,K1,1513132160000");
        assert_eq!(texts(f.push(read.as_bytes())), [PUSH]);
        assert!(f.pending());
        assert_eq!(texts(f.flush()), ["D1,K1,1513132160000"]);
        assert!(!f.pending());
    }

    #[test]
    fn a_message_split_across_reads_is_joined_and_line_endings_are_accepted() {
        let mut f = Framer::new("D1", "K1", 1024);
        assert!(f.push(&PUSH.as_bytes()[..20]).messages.is_empty());
        assert!(f.push(&PUSH.as_bytes()[20..]).messages.is_empty());
        assert_eq!(texts(f.flush()), [PUSH]);
        assert_eq!(
            texts(f.push(format!("{PUSH}\r\n{PUSH}\n").as_bytes())),
            [PUSH, PUSH]
        );
    }

    #[test]
    fn an_oversized_message_is_dropped_and_the_next_one_is_kept() {
        let mut f = Framer::new("D1", "K1", 64);
        let huge = format!("D1,K1,1,FOTA,2.0,null,https://h/{}", "a".repeat(100));
        let framed = f.push(huge.as_bytes());
        assert!(framed.oversized && framed.messages.is_empty());
        assert!(f.push(b"aaaa").messages.is_empty());
        assert_eq!(texts(f.push(format!("{PUSH}\n").as_bytes())), [PUSH]);
    }
}
