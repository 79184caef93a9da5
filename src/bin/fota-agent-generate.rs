//! `fota-agent-generate man|completions DIR`: the agent's man pages and shell
//! completions, written from the same clap definitions the agent parses with
//! (src/cli/args.rs), so they never drift. The Debian package build runs it; it
//! is not installed. A program of its own so that the agent does not carry
//! clap_mangen and clap_complete (~100 KiB) for a build step.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

// The agent's command line.
#[allow(dead_code)]
#[path = "../cli/args.rs"]
mod args;

#[derive(Parser)]
#[command(name = "fota-agent-generate")]
enum Generate {
    /// Write fota-agent.1 (and one page per subcommand) into DIR.
    Man { dir: PathBuf },
    /// Write bash, zsh and fish completions into DIR.
    Completions { dir: PathBuf },
}

fn main() -> ExitCode {
    let (dir, written) = match Generate::parse() {
        Generate::Man { dir } => {
            let written = create(&dir).and_then(|()| clap_mangen::generate_to(command(), &dir));
            (dir, written)
        }
        Generate::Completions { dir } => {
            let written = create(&dir).and_then(|()| completions(&dir));
            (dir, written)
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fota-agent-generate: writing to {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn command() -> clap::Command {
    args::Args::command()
}

fn create(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

fn completions(dir: &Path) -> std::io::Result<()> {
    let mut cmd = command();
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd, "fota-agent", dir)?;
    }
    Ok(())
}
