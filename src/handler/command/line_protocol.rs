//! The stdout line protocol of a command (and what its stderr means): lines are
//! read from any bytes ([`LineReader`]), stdout lines are `PROGRESS <0-100>`,
//! `MESSAGE <text>` or anything else ([`parse_line`]), and [`Output`] acts on
//! them: the version step's first non-empty line is the version, progress moves
//! the current progress step, the last stderr line becomes a failure's reason.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::Step;
use crate::progress::Progress;

/// Longest line kept from a command's output; the rest of the line is dropped.
pub(super) const MAX_LINE: usize = 16 * 1024;

/// Longest stderr line quoted in an error message.
const MAX_REASON: usize = 512;

/// What the output of a command said.
pub(super) struct Output<'a> {
    device: &'a str,
    step: Step,
    /// Moved by `PROGRESS` lines (transfer and update only).
    progress: Option<&'a Progress>,
    /// Version step: the first non-empty stdout line, trimmed.
    pub(super) version: Option<String>,
    /// The last non-empty stderr line, cut to [`MAX_REASON`] bytes.
    pub(super) last_stderr: Option<String>,
}

impl<'a> Output<'a> {
    pub(super) fn new(device: &'a str, step: Step, progress: Option<&'a Progress>) -> Self {
        Output {
            device,
            step,
            progress,
            version: None,
            last_stderr: None,
        }
    }

    pub(super) fn stdout_line(&mut self, line: &str) {
        let device = self.device;
        let step = self.step.env();
        if self.step == Step::Version {
            let trimmed = line.trim();
            if self.version.is_none() && !trimmed.is_empty() {
                self.version = Some(trimmed.to_string());
            } else {
                tracing::debug!(device = %device, step, "stdout: {line}");
            }
            return;
        }
        match parse_line(line) {
            Line::Progress(Ok(percent)) => match self.progress {
                Some(progress) => {
                    if let Err(e) = progress.update(percent) {
                        tracing::warn!(device = %device, step, "ignoring PROGRESS {percent}: {e}");
                    }
                }
                None => tracing::debug!(device = %device, step,
                    "ignoring PROGRESS {percent} outside transfer and update"),
            },
            Line::Progress(Err(value)) => tracing::warn!(device = %device, step,
                "ignoring invalid PROGRESS {value:?}: expected a number from 0 to 100"),
            Line::Message(text) => tracing::info!(device = %device, step, "{text}"),
            Line::Other(text) => tracing::debug!(device = %device, step, "stdout: {text}"),
        }
    }

    pub(super) fn stderr_line(&mut self, line: &str) {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return;
        }
        tracing::warn!(device = %self.device, step = self.step.env(), "{trimmed}");
        self.last_stderr = Some(truncate(trimmed, MAX_REASON));
    }
}

/// `s` cut to at most `max` bytes (at a character boundary), marked with `…`.
pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One stdout line of a transfer, update or executable command.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line<'a> {
    /// `PROGRESS <n>`: the percent, or the text that is not one.
    Progress(Result<u8, &'a str>),
    /// `MESSAGE <text>`
    Message(&'a str),
    Other(&'a str),
}

pub(super) fn parse_line(line: &str) -> Line<'_> {
    let line = line.trim();
    if let Some(rest) = keyword(line, "PROGRESS") {
        let number = rest.strip_suffix('%').unwrap_or(rest).trim_end();
        return Line::Progress(match number.parse::<u8>() {
            Ok(n) if n <= 100 && number.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(rest),
        });
    }
    if let Some(text) = keyword(line, "MESSAGE") {
        return Line::Message(text);
    }
    Line::Other(line)
}

/// The rest of `line` after `word` and whitespace, if `line` starts with `word` as a
/// whole word.
fn keyword<'a>(line: &'a str, word: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(word)?;
    if rest.is_empty() || rest.starts_with(char::is_whitespace) {
        Some(rest.trim_start())
    } else {
        None
    }
}

/// Reads lines of any bytes: lossy UTF-8, `\r\n` or `\n` endings, lines cut at
/// [`MAX_LINE`] bytes. Cancel safe: a partial line survives a dropped `next_line`.
pub(super) struct LineReader<R> {
    inner: BufReader<R>,
    line: Vec<u8>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(super) fn new(inner: R) -> Self {
        LineReader {
            inner: BufReader::new(inner),
            line: Vec::new(),
        }
    }

    /// The next line, or `None` at the end of the stream.
    pub(super) async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            // The only await point; `fill_buf` is cancel safe and everything else
            // lives in `self`.
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                if self.line.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.take_line()));
            }
            let (chunk, used, complete) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.inner.consume(used);
            if complete {
                return Ok(Some(self.take_line()));
            }
        }
    }

    fn take_line(&mut self) -> String {
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        line
    }
}

/// Reads the next line, or `None` at the end of the stream (or on a read error,
/// which is logged).
pub(super) async fn next_line<R: AsyncRead + Unpin>(
    reader: &mut Option<LineReader<R>>,
) -> Option<String> {
    let reader = reader.as_mut()?;
    match reader.next_line().await {
        Ok(line) => line,
        Err(e) => {
            tracing::warn!("reading command output: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_protocol_lines() {
        assert_eq!(parse_line("PROGRESS 42"), Line::Progress(Ok(42)));
        assert_eq!(parse_line("  PROGRESS\t100 \r"), Line::Progress(Ok(100)));
        assert_eq!(parse_line("PROGRESS 0%"), Line::Progress(Ok(0)));
        assert_eq!(parse_line("PROGRESS 101"), Line::Progress(Err("101")));
        assert_eq!(parse_line("PROGRESS +5"), Line::Progress(Err("+5")));
        assert_eq!(parse_line("PROGRESS 4.5"), Line::Progress(Err("4.5")));
        assert_eq!(parse_line("PROGRESS"), Line::Progress(Err("")));
        assert_eq!(parse_line("PROGRESSIVE 5"), Line::Other("PROGRESSIVE 5"));
        assert_eq!(
            parse_line("MESSAGE  hello world "),
            Line::Message("hello world")
        );
        assert_eq!(parse_line("MESSAGE"), Line::Message(""));
        assert_eq!(parse_line("progress 5"), Line::Other("progress 5"));
        assert_eq!(parse_line("ÿ PROGRESS 5"), Line::Other("ÿ PROGRESS 5"));
    }

    #[test]
    fn truncates_reasons() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("short", 10), "short");
    }

    #[tokio::test]
    async fn line_reader_handles_any_bytes() {
        let mut data = b"one\r\ntwo\n\n\xff\xfebad\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_LINE + 100));
        data.extend(b"\nlast");
        let mut r = LineReader::new(&data[..]);
        let mut lines = Vec::new();
        while let Some(line) = r.next_line().await.unwrap() {
            lines.push(line);
        }
        assert_eq!(lines.len(), 6);
        assert_eq!(&lines[..4], ["one", "two", "", "\u{fffd}\u{fffd}bad"]);
        assert_eq!(lines[4].len(), MAX_LINE);
        assert_eq!(lines[5], "last");
    }
}
