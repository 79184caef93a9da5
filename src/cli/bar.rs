//! The progress line `fetch` and `install` show on a terminal: one line on
//! stderr, redrawn in place at most ten times a second. Two fixed layouts need
//! no template engine (indicatif and its terminal crates were 50 KiB of the
//! binary for them).

use std::io::Write;
use std::time::{Duration, Instant};

/// Cells of the gauge between its brackets.
const GAUGE: usize = 40;
/// Redraws closer together than this are skipped (a fast download reports
/// thousands of chunks a second).
const REDRAW: Duration = Duration::from_millis(100);

/// A line on stderr that is redrawn in place.
pub struct Bar {
    drawn: Option<Instant>,
    started: Instant,
}

impl Bar {
    pub fn new() -> Bar {
        Bar {
            drawn: None,
            started: Instant::now(),
        }
    }

    /// Shows `line` unless a line was shown less than [`REDRAW`] ago.
    pub fn show(&mut self, line: impl FnOnce() -> String) {
        if self.drawn.is_none_or(|at| at.elapsed() >= REDRAW) {
            self.show_now(&line());
        }
    }

    /// Shows `line` now.
    pub fn show_now(&mut self, line: &str) {
        draw(&format!("\r{line}\x1b[K"));
        self.drawn = Some(Instant::now());
    }

    /// Shows `line` and moves on to the next line: it stays on screen.
    pub fn finish(&mut self, line: &str) {
        draw(&format!("\r{line}\x1b[K\n"));
        self.drawn = Some(Instant::now());
    }

    /// Erases the line.
    pub fn clear(&mut self) {
        draw("\r\x1b[K");
    }

    /// Bytes per second since the bar was made.
    pub fn rate(&self, bytes: u64) -> u64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            (bytes as f64 / secs) as u64
        } else {
            0
        }
    }
}

/// Writes `text` to stderr in one piece, so that a log line written by another
/// thread cannot land inside it. A terminal that went away is no reason to stop
/// the work: errors are ignored.
fn draw(text: &str) {
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// `[=====>     ]` for `done` of `total`.
pub fn gauge(done: u64, total: u64) -> String {
    let filled = match total {
        0 => 0,
        t => (u128::from(done.min(t)) * GAUGE as u128 / u128::from(t)) as usize,
    };
    let head = usize::from(filled < GAUGE && filled > 0);
    format!(
        "[{}{}{}]",
        "=".repeat(filled - head),
        ">".repeat(head),
        " ".repeat(GAUGE - filled)
    )
}

/// `n` bytes for a person: `512 B`, `1.5 KiB`, `256.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_fills_with_a_head_until_complete() {
        assert_eq!(gauge(0, 100), format!("[{}]", " ".repeat(40)));
        assert_eq!(
            gauge(50, 100),
            format!("[{}>{}]", "=".repeat(19), " ".repeat(20))
        );
        assert_eq!(gauge(100, 100), format!("[{}]", "=".repeat(40)));
        assert_eq!(gauge(7, 0), gauge(0, 1), "an unknown total shows empty");
        assert_eq!(
            gauge(200, 100),
            gauge(100, 100),
            "past the total stays full"
        );
    }

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(256 << 20), "256.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(bytes(u64::MAX), "16777216.0 TiB");
    }
}
