//! SLIP framing (RFC 1055 as the ESP ROM uses it): every frame starts and ends with
//! `0xC0`; inside a frame `0xC0` is sent as `0xDB 0xDC` and `0xDB` as `0xDB 0xDD`.
//!
//! The decoder is fed whatever the wire delivers — boot messages of the
//! application, half frames, garbage — and only ever yields well-formed frames.

/// Frame delimiter.
pub const END: u8 = 0xC0;
/// Escape byte.
pub const ESC: u8 = 0xDB;
/// `ESC ESC_END` stands for `END` inside a frame.
pub const ESC_END: u8 = 0xDC;
/// `ESC ESC_ESC` stands for `ESC` inside a frame.
pub const ESC_ESC: u8 = 0xDD;

/// Frames longer than this are dropped (no ROM reply comes near it); bounds the
/// memory a babbling device can make the agent use.
pub const MAX_FRAME: usize = 16 * 1024;

/// Wraps `payload` in one SLIP frame.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload.len() / 32 + 2);
    out.push(END);
    for &b in payload {
        match b {
            END => out.extend_from_slice(&[ESC, ESC_END]),
            ESC => out.extend_from_slice(&[ESC, ESC_ESC]),
            b => out.push(b),
        }
    }
    out.push(END);
    out
}

/// Turns a byte stream back into frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    in_frame: bool,
    escape: bool,
    /// The current frame had an invalid escape or grew too long: dropped at its end.
    broken: bool,
}

/// What one fed byte completed.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Nothing complete yet.
    Pending,
    /// A well-formed frame (never empty).
    Frame(Vec<u8>),
    /// A frame ended but was malformed (bad escape, too long); it was dropped.
    Dropped,
}

impl Decoder {
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Feeds one byte.
    pub fn push(&mut self, b: u8) -> Decoded {
        if b == END {
            if !self.in_frame {
                // Opening delimiter (or idle fill between frames).
                self.in_frame = true;
                return Decoded::Pending;
            }
            if self.buf.is_empty() && !self.broken {
                // `C0 C0`: the previous frame's end and this one's start, or
                // an empty frame: stay inside a frame.
                self.escape = false;
                return Decoded::Pending;
            }
            let frame = std::mem::take(&mut self.buf);
            let broken = self.broken || self.escape;
            self.escape = false;
            self.broken = false;
            self.in_frame = false;
            return if broken {
                Decoded::Dropped
            } else {
                Decoded::Frame(frame)
            };
        }
        if !self.in_frame {
            // Noise between frames (application output, boot messages).
            return Decoded::Pending;
        }
        if self.broken {
            return Decoded::Pending;
        }
        let byte = if self.escape {
            self.escape = false;
            match b {
                ESC_END => END,
                ESC_ESC => ESC,
                _ => {
                    self.broken = true;
                    self.buf.clear();
                    return Decoded::Pending;
                }
            }
        } else if b == ESC {
            self.escape = true;
            return Decoded::Pending;
        } else {
            b
        };
        if self.buf.len() >= MAX_FRAME {
            self.broken = true;
            self.buf.clear();
            return Decoded::Pending;
        }
        self.buf.push(byte);
        Decoded::Pending
    }

    /// Forgets any partial frame.
    pub fn reset(&mut self) {
        *self = Decoder::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<Decoded> {
        let mut d = Decoder::new();
        bytes
            .iter()
            .map(|&b| d.push(b))
            .filter(|r| *r != Decoded::Pending)
            .collect()
    }

    #[test]
    fn round_trips_the_special_bytes() {
        let payload = [0x01, END, 0x02, ESC, END, ESC, 0x03];
        let wire = encode(&payload);
        assert_eq!(
            wire,
            [
                END, 0x01, ESC, ESC_END, 0x02, ESC, ESC_ESC, ESC, ESC_END, ESC, ESC_ESC, 0x03, END
            ]
        );
        assert_eq!(decode_all(&wire), vec![Decoded::Frame(payload.to_vec())]);
    }

    #[test]
    fn ignores_noise_and_empty_frames_and_drops_bad_escapes() {
        let mut wire = b"ets Jan  8 2013,rst cause:2\r\n".to_vec();
        wire.extend_from_slice(&[END, END, END]);
        wire.extend_from_slice(&encode(&[1, 2]));
        wire.extend_from_slice(&[END, 9, ESC, 0x42, 7, END]);
        wire.extend_from_slice(&encode(&[3]));
        assert_eq!(
            decode_all(&wire),
            vec![
                Decoded::Frame(vec![1, 2]),
                Decoded::Dropped,
                Decoded::Frame(vec![3])
            ]
        );
    }

    #[test]
    fn drops_oversized_frames() {
        let mut wire = vec![END];
        wire.extend(std::iter::repeat_n(0x55, MAX_FRAME + 1));
        wire.push(END);
        wire.extend_from_slice(&encode(&[4]));
        assert_eq!(
            decode_all(&wire),
            vec![Decoded::Dropped, Decoded::Frame(vec![4])]
        );
    }

    #[test]
    fn any_bytes_never_panic() {
        let mut d = Decoder::new();
        let mut x: u32 = 0x1234_5678;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let _ = d.push(x as u8);
        }
    }
}
