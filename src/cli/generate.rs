//! `fota-agent generate`: the man page and shell completions, generated from the
//! same clap definitions the binary parses with, so they never drift. The Debian
//! package installs them.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

#[derive(clap::Subcommand)]
pub enum Generate {
    /// Write fota-agent.1 (and one page per subcommand) into DIR.
    Man { dir: std::path::PathBuf },
    /// Write bash, zsh and fish completions into DIR.
    Completions { dir: std::path::PathBuf },
}

pub fn generate<C: CommandFactory>(what: Generate) -> anyhow::Result<ExitCode> {
    let cmd = C::command();
    match what {
        Generate::Man { dir } => {
            create(&dir)?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
        }
        Generate::Completions { dir } => {
            create(&dir)?;
            let mut cmd = cmd;
            for shell in [
                clap_complete::Shell::Bash,
                clap_complete::Shell::Zsh,
                clap_complete::Shell::Fish,
            ] {
                clap_complete::generate_to(shell, &mut cmd, "fota-agent", &dir)
                    .with_context(|| format!("writing {shell} completions to {}", dir.display()))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn create(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}
