//! The ESP8266 ROM simulator as a process, for esptool and the benchmark.
//!
//! ```text
//! esp8266_sim serve [--line-rate BAUD] [--flash-size BYTES] [--path-file F] [--dump F]
//! ```
//! prints `PTY /dev/pts/N` (and writes the path to `--path-file`), serves until
//! SIGTERM/SIGINT, and writes the flash to `--dump` shortly after every write
//! burst and at exit. Run without `serve` (as `cargo test` does, this being a
//! `harness = false` test target) it only checks that it starts and exits 0.

#[path = "mod.rs"]
mod sim;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("serve") {
        let sim = sim::Simulator::start(sim::SimConfig::default()).expect("pty");
        println!(
            "esp8266_sim: ok (would serve on {}); run with `serve` to serve",
            sim.path().display()
        );
        return;
    }
    let mut config = sim::SimConfig::default();
    let mut path_file = None;
    let mut dump = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| usage(a));
        match a.as_str() {
            "--line-rate" => config.line_rate = Some(val().parse().unwrap_or_else(|_| usage(a))),
            "--flash-size" => config.flash_size = val().parse().unwrap_or_else(|_| usage(a)),
            "--path-file" => path_file = Some(val()),
            "--dump" => dump = Some(val()),
            _ => usage(a),
        }
    }
    let handler = nix::sys::signal::SigHandler::Handler(on_signal);
    for sig in [nix::sys::signal::SIGTERM, nix::sys::signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { nix::sys::signal::signal(sig, handler) }.expect("signal handler");
    }
    let mut sim = sim::Simulator::start(config).expect("cannot create a pty");
    let path = sim.path().display().to_string();
    if let Some(f) = &path_file {
        std::fs::write(f, &path).expect("cannot write --path-file");
    }
    println!("PTY {path}");
    let mut dumped_at: Option<Instant> = None;
    let write_dump = |sim: &sim::Simulator| {
        if let Some(f) = &dump {
            let tmp = format!("{f}.tmp");
            std::fs::write(&tmp, sim.flash()).expect("cannot write --dump");
            std::fs::rename(&tmp, f).expect("cannot write --dump");
        }
    };
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        let last = sim.stats().last_write;
        if let Some(t) = last
            && dumped_at.is_none_or(|d| d < t)
            && t.elapsed() > Duration::from_millis(200)
        {
            write_dump(&sim);
            dumped_at = Some(Instant::now());
        }
    }
    sim.stop();
    write_dump(&sim);
    let stats = sim.stats();
    eprintln!(
        "esp8266_sim: {} bytes received, {} commands, {} erases, FLASH_END {:?}",
        stats.bytes_received,
        stats.ops.len(),
        stats.erased.len(),
        stats.flash_end
    );
}

fn usage(arg: &str) -> ! {
    eprintln!(
        "esp8266_sim: bad argument {arg:?}\nusage: esp8266_sim serve [--line-rate BAUD] \
         [--flash-size BYTES] [--path-file F] [--dump F]"
    );
    std::process::exit(2)
}
