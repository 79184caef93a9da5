//! The command handler: plugs any device in through external programs, so a new
//! device needs a script, not a new agent build.
//!
//! # Protocol
//!
//! Each configured command is an argv array, run directly (no shell):
//!
//! | step       | key                  | arguments appended | bounded by               |
//! |------------|----------------------|--------------------|--------------------------|
//! | version    | `version_command`    | none               | `command_timeout`        |
//! | executable | `executable_command` | none               | `command_timeout`        |
//! | transfer   | `transfer_command`   | the image path     | the engine's update time |
//! | update     | `update_command`     | the image path     | the engine's update time |
//!
//! Other handlers run their auxiliary commands through the same supervision
//! ([`CommandHandler::run_checked`]): a serial handler's `reset_command`
//! (`FOTA_STEP=reset`), RAUC's `health_command` (`health`) and `reboot_command`
//! (`reboot`), each with its own limit.
//!
//! Environment (added to the agent's own): `FOTA_DEVICE_ID`, `FOTA_DEVICE_TYPE`,
//! `FOTA_STEP` (`version`, `executable`, `transfer`, `update`); for transfer and
//! update also `FOTA_IMAGE` (the verified image's path), `FOTA_VERSION`,
//! `FOTA_IMAGE_SIZE` (bytes) and, when computed, `FOTA_MD5` and `FOTA_SHA256`
//! (lowercase hex). Any of these names inherited from the agent's environment is
//! removed first, so a variable that is absent really is absent. stdin is
//! `/dev/null`; the working directory is the agent's.
//!
//! stdout, read line by line while the command runs (invalid UTF-8 is replaced,
//! lines longer than 16 KiB are cut):
//! - version step: the first non-empty line, trimmed, is the version; no output
//!   means the version is unknown.
//! - other steps: `PROGRESS <0-100>` (an optional `%` is accepted) sets the percent
//!   of the current progress step (transfer and update only; out-of-range, invalid
//!   or decreasing values are logged and ignored); `MESSAGE <text>` is logged at
//!   info level; anything else is logged at debug level.
//!
//! stderr lines are logged as warnings; the last non-empty one becomes the reason
//! of a failure.
//!
//! Exit status: 0 is success. For the executable step 1 means "not now"; any other
//! status (or a signal) fails the step with
//! `"<step> command: exited with status N: <last stderr line>"`.
//!
//! Each command runs in its own process group. A command still running when its
//! future is dropped (engine timeout, version/executable timeout) has its whole
//! group killed with SIGKILL at once; [`UpdateHandler::cancel`] sends SIGTERM to the
//! group of a running transfer or update, and SIGKILL after a grace period
//! (default [`DEFAULT_CANCEL_GRACE`]). Processes a command leaves behind after it
//! exited normally are left alone; the agent stops reading their output
//! shortly after the command itself exited.
//!
//! # Layout
//!
//! - this file: the handler: which command runs for which step, its argv and
//!   environment, and what its exit status means;
//! - `supervise`: process supervision: spawning into an own process group, killing
//!   the group, `cancel`'s SIGTERM-then-SIGKILL with `/proc` scanning for
//!   survivors, following a command until it exited;
//! - `line_protocol`: reading output lines from any bytes and the stdout protocol
//!   (`PROGRESS` / `MESSAGE`, the version line, the stderr reason).

pub mod config;
mod line_protocol;
mod supervise;
pub(crate) use supervise::parse_stat;

use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;

use super::{BackgroundTransfer, HandlerError, UpdateHandler, VerifiedImage};
use crate::checksum::ChecksumAlgorithm;
use crate::config::CommandConfig;
use crate::progress::{Progress, ProgressError, ProgressStep};
use line_protocol::Output;
use supervise::{Groups, Stream, describe_status};

/// How long [`UpdateHandler::cancel`] waits after SIGTERM before it sends SIGKILL.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Every environment variable the handler sets.
const ENV_NAMES: [&str; 8] = [
    "FOTA_DEVICE_ID",
    "FOTA_DEVICE_TYPE",
    "FOTA_STEP",
    "FOTA_IMAGE",
    "FOTA_VERSION",
    "FOTA_IMAGE_SIZE",
    "FOTA_MD5",
    "FOTA_SHA256",
];

/// Which command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Version,
    Executable,
    Transfer,
    Update,
    /// A serial handler's `reset_command` (resets the device into its loader).
    Reset,
    /// RAUC's `health_command` (is the new system healthy?).
    Health,
    /// RAUC's `reboot_command`.
    Reboot,
}

impl Step {
    /// The value of `FOTA_STEP`.
    fn env(self) -> &'static str {
        match self {
            Step::Version => "version",
            Step::Executable => "executable",
            Step::Transfer => "transfer",
            Step::Update => "update",
            Step::Reset => "reset",
            Step::Health => "health",
            Step::Reboot => "reboot",
        }
    }

    /// The `step` of a [`HandlerError`].
    fn label(self) -> &'static str {
        match self {
            Step::Version => "version command",
            Step::Executable => "executable command",
            Step::Transfer => "transfer command",
            Step::Update => "update command",
            Step::Reset => "reset command",
            Step::Health => "health command",
            Step::Reboot => "reboot command",
        }
    }

    /// Whether `cancel` stops it (transfer and update; the others have their own
    /// timeout).
    fn cancelable(self) -> bool {
        matches!(self, Step::Transfer | Step::Update)
    }
}

/// Runs the configured commands of one device.
#[derive(Debug)]
pub struct CommandHandler {
    device_id: String,
    device_type: String,
    config: CommandConfig,
    cancel_grace: Duration,
    groups: Groups,
}

impl CommandHandler {
    pub fn new(device_id: &str, device_type: &str, config: CommandConfig) -> Self {
        CommandHandler {
            device_id: device_id.to_string(),
            device_type: device_type.to_string(),
            config,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            groups: Groups::default(),
        }
    }

    /// The version reader of a serial handler's `version_command` (none when
    /// the device has none).
    pub fn serial_version(
        device_id: &str,
        device_type: &str,
        keys: &dyn VersionKeys,
    ) -> Option<Self> {
        let (argv, command_timeout) = keys.version_keys();
        argv.map(|argv| Self::version_only(device_id, device_type, argv.clone(), command_timeout))
    }

    /// A handler that only reads the version with `argv` (for the serial
    /// handlers' `version_command`).
    pub fn version_only(
        device_id: &str,
        device_type: &str,
        argv: Vec<String>,
        command_timeout: Duration,
    ) -> Self {
        CommandHandler::new(
            device_id,
            device_type,
            CommandConfig {
                version_command: Some(argv),
                executable_command: None,
                transfer_command: None,
                update_command: vec![],
                command_timeout,
            },
        )
    }

    /// How long `cancel` waits after SIGTERM before SIGKILL (default
    /// [`DEFAULT_CANCEL_GRACE`]).
    pub fn with_cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    pub fn config(&self) -> &CommandConfig {
        &self.config
    }

    #[cfg(test)]
    fn running(&self) -> std::sync::MutexGuard<'_, Vec<supervise::Running>> {
        self.groups.running()
    }

    /// Runs a serial handler's `reset_command` (e.g. a GPIO pulse on the
    /// device's reset line), killed after `command_timeout`; fails unless it
    /// exits 0.
    pub async fn run_reset(&self, argv: &[String]) -> Result<(), HandlerError> {
        self.run_checked(Step::Reset, argv, self.config.command_timeout)
            .await
    }

    /// Runs another handler's auxiliary command (`step` names it in
    /// `FOTA_STEP` and errors); its whole process group is killed after `limit`.
    /// Fails unless it exits 0, with the last stderr line as the reason.
    pub async fn run_checked(
        &self,
        step: Step,
        argv: &[String],
        limit: Duration,
    ) -> Result<(), HandlerError> {
        let out = self.run_bounded(step, argv, limit).await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(out.failure(step))
        }
    }

    /// Runs a command that is not cancelable, its group killed after `after`.
    async fn run_bounded(
        &self,
        step: Step,
        argv: &[String],
        after: Duration,
    ) -> Result<RunOutput, HandlerError> {
        match tokio::time::timeout(after, self.run(step, argv, None, None)).await {
            Ok(result) => result,
            // The dropped run killed the process group.
            Err(_) => {
                tracing::warn!(device = %self.device_id, step = step.env(), ?after,
                    "{} timed out; killed it", step.label());
                Err(HandlerError::Timeout {
                    step: step.label().to_string(),
                    after,
                })
            }
        }
    }

    /// Runs a transfer or update command and maps its exit status.
    async fn run_install(
        &self,
        step: Step,
        argv: &[String],
        image: &VerifiedImage,
        progress: &Progress,
    ) -> Result<(), HandlerError> {
        let out = self.run(step, argv, Some(image), Some(progress)).await?;
        if out.status.success() {
            Ok(())
        } else if out.canceled {
            Err(HandlerError::Canceled)
        } else {
            Err(out.failure(step))
        }
    }

    /// Spawns `argv` (plus the image path), follows its output until it exited and
    /// its output is read, and returns how it ended. Dropping the returned future
    /// kills the command's process group.
    async fn run(
        &self,
        step: Step,
        argv: &[String],
        image: Option<&VerifiedImage>,
        progress: Option<&Progress>,
    ) -> Result<RunOutput, HandlerError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(HandlerError::failed(step.label(), "the command is empty"));
        };
        let mut cmd = self.command(step, program, args, image);
        tracing::debug!(device = %self.device_id, step = step.env(), ?argv,
            image = ?image.map(|i| i.path()), "running {}", step.label());
        let mut child = supervise::spawn(&mut cmd)
            .map_err(|e| HandlerError::io(format!("{}: cannot run {program}", step.label()), e))?;
        // Declared after `child`, so it is dropped (and kills the group) first.
        let (mut guard, canceled) = self.groups.watch(&child, step, &self.device_id);
        if let (Some(progress), Some(pid)) = (progress, child.id()) {
            // Recorded before its output is read: a crash from here on leaves it
            // to recovery to stop.
            progress.process_started(pid as i32);
        }
        let mut out = Output::new(&self.device_id, step, progress);
        let status =
            supervise::follow(
                &mut child,
                &self.device_id,
                step,
                |stream, line| match stream {
                    Stream::Stdout => out.stdout_line(line),
                    Stream::Stderr => out.stderr_line(line),
                },
            )
            .await
            .map_err(|e| HandlerError::io(format!("{}: waiting for {program}", step.label()), e))?;
        if let Some(guard) = guard.as_mut() {
            guard.disarm();
        }
        let Some(status) = status else {
            // The loop only ends with a status.
            return Err(HandlerError::failed(
                step.label(),
                "ended without exit status",
            ));
        };
        tracing::debug!(device = %self.device_id, step = step.env(), %status,
            "{} finished", step.label());
        Ok(RunOutput {
            status,
            version: out.version,
            last_stderr: out.last_stderr,
            canceled: canceled.load(Ordering::SeqCst),
        })
    }

    /// The command line and environment of one step (see the module docs).
    fn command(
        &self,
        step: Step,
        program: &str,
        args: &[String],
        image: Option<&VerifiedImage>,
    ) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args);
        for name in ENV_NAMES {
            cmd.env_remove(name);
        }
        cmd.env("FOTA_DEVICE_ID", &self.device_id)
            .env("FOTA_DEVICE_TYPE", &self.device_type)
            .env("FOTA_STEP", step.env());
        if let Some(image) = image {
            cmd.arg(image.path());
            let digests = image.digests();
            cmd.env("FOTA_IMAGE", image.path())
                .env("FOTA_VERSION", &image.firmware().version)
                .env("FOTA_IMAGE_SIZE", digests.length.to_string());
            if let Some(md5) = digests.get(ChecksumAlgorithm::Md5) {
                cmd.env("FOTA_MD5", md5);
            }
            if let Some(sha256) = digests.get(ChecksumAlgorithm::Sha256) {
                cmd.env("FOTA_SHA256", sha256);
            }
        }
        cmd
    }
}

/// The version `handler` reads; unknown (`None`) without a handler (the serial
/// handlers' optional `version_command`).
/// A serial handler's config keys for reading the version: `version_command`
/// and `command_timeout`.
pub trait VersionKeys {
    fn version_keys(&self) -> (Option<&Vec<String>>, Duration);
}

pub async fn version_from(
    handler: Option<&CommandHandler>,
) -> Result<Option<String>, HandlerError> {
    match handler {
        Some(handler) => handler.current_version().await,
        None => Ok(None),
    }
}

/// How a command ended.
#[derive(Debug)]
struct RunOutput {
    status: ExitStatus,
    /// Version step: the first non-empty stdout line, trimmed.
    version: Option<String>,
    last_stderr: Option<String>,
    /// `cancel` was called while it ran.
    canceled: bool,
}

impl RunOutput {
    /// The error for an unsuccessful exit status.
    fn failure(&self, step: Step) -> HandlerError {
        let mut message = describe_status(self.status);
        if let Some(reason) = &self.last_stderr {
            message.push_str(": ");
            message.push_str(reason);
        }
        HandlerError::failed(step.label(), message)
    }
}

#[async_trait]
impl UpdateHandler for CommandHandler {
    async fn current_version(&self) -> Result<Option<String>, HandlerError> {
        let Some(argv) = &self.config.version_command else {
            return Ok(None);
        };
        let out = self.run_bounded(Step::Version, argv, self.config.command_timeout)
            .await?;
        if !out.status.success() {
            return Err(out.failure(Step::Version));
        }
        Ok(out.version)
    }

    async fn is_update_executable(&self) -> Result<bool, HandlerError> {
        let Some(argv) = &self.config.executable_command else {
            return Ok(true);
        };
        let out = self.run_bounded(Step::Executable, argv, self.config.command_timeout)
            .await?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(out.failure(Step::Executable)),
        }
    }

    async fn update(&self, image: &VerifiedImage, progress: &Progress) -> Result<(), HandlerError> {
        match progress.advance_to(ProgressStep::Updating) {
            Ok(()) => {}
            Err(e @ ProgressError::AlreadyFinished(_)) => {
                return Err(HandlerError::failed(
                    Step::Update.label(),
                    format!("not started: {e}"),
                ));
            }
            Err(e) => tracing::warn!(device = %self.device_id,
                "cannot report the update step: {e}"),
        }
        self.run_install(Step::Update, &self.config.update_command, image, progress)
            .await
    }

    async fn cancel(&self) {
        self.groups.cancel(self.cancel_grace, &self.device_id).await;
    }

    fn background_transfer(&self) -> Option<&dyn BackgroundTransfer> {
        match self.config.transfer_command {
            Some(_) => Some(self),
            None => None,
        }
    }
}

#[async_trait]
impl BackgroundTransfer for CommandHandler {
    async fn transfer(
        &self,
        image: &VerifiedImage,
        progress: &Progress,
    ) -> Result<(), HandlerError> {
        let Some(argv) = &self.config.transfer_command else {
            return Err(HandlerError::failed(
                Step::Transfer.label(),
                "no transfer_command configured",
            ));
        };
        self.run_install(Step::Transfer, argv, image, progress)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use nix::errno::Errno;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;
    use tokio::sync::broadcast;
    use tokio::time::Instant;

    use super::supervise::parse_stat;
    use super::*;
    use crate::checksum::MultiHasher;
    use crate::model::{Firmware, FirmwareLocation};
    use crate::progress::{ProgressEvent, ProgressKind};

    fn script(name: &str) -> String {
        format!(
            "{}/tests/scripts/command/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    /// `sh <fixture> <args...>`
    fn sh(name: &str, args: &[&str]) -> Vec<String> {
        let mut argv = vec!["sh".to_string(), script(name)];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    fn config() -> CommandConfig {
        CommandConfig {
            version_command: None,
            executable_command: None,
            transfer_command: None,
            update_command: vec!["true".to_string()],
            command_timeout: Duration::from_secs(10),
        }
    }

    fn handler(config: CommandConfig) -> CommandHandler {
        CommandHandler::new("gw-1", "sensor-v2", config)
    }

    fn image_with(dir: &Path, algorithms: &[ChecksumAlgorithm]) -> VerifiedImage {
        let path = dir.join("image 2.0.bin");
        let bytes = b"firmware bytes";
        std::fs::write(&path, bytes).unwrap();
        let mut hasher = MultiHasher::new(algorithms.iter().copied());
        hasher.update(bytes);
        let mut firmware = Firmware::new("sensor-v2", "2.0", FirmwareLocation::File(path.clone()));
        firmware.size = Some(bytes.len() as u64);
        VerifiedImage::new(path, firmware, hasher.finish())
    }

    fn image(dir: &Path) -> VerifiedImage {
        image_with(dir, &[ChecksumAlgorithm::Md5, ChecksumAlgorithm::Sha256])
    }

    /// A progress that has started `start`, and its events from then on.
    fn progress(
        steps: &[ProgressStep],
        start: ProgressStep,
    ) -> (Progress, broadcast::Receiver<ProgressEvent>) {
        let (tx, mut rx) = broadcast::channel(256);
        let p = Progress::new("gw-1", "2.0", tx);
        p.define_sequence(steps).unwrap();
        p.advance_to(start).unwrap();
        while rx.try_recv().is_ok() {}
        (p, rx)
    }

    fn kinds(rx: &mut broadcast::Receiver<ProgressEvent>) -> Vec<ProgressKind> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| e.kind)
            .collect()
    }

    /// Dead: no such process, or a zombie nobody reaped (PID 1 of a container may
    /// not reap).
    fn is_gone(pid: i32) -> bool {
        if let Err(Errno::ESRCH) = nix::sys::signal::kill(Pid::from_raw(pid), None) {
            return true;
        }
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => parse_stat(&stat).is_some_and(|s| matches!(s.state, 'Z' | 'X')),
            Err(_) => true,
        }
    }

    async fn assert_gone(pids: &[i32]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pids.iter().all(|&p| is_gone(p)) {
            assert!(Instant::now() < deadline, "still alive: {pids:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The pids a fixture wrote into `file`, once it did.
    /// `f`, which must end within a minute: what it would otherwise wait for
    /// (a grace period, a hung script) takes far longer.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .expect("still waiting after a minute")
    }

    async fn pids(file: &Path) -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(file) {
                return text
                    .split_whitespace()
                    .map(|p| p.parse().unwrap())
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "{} never written",
                file.display()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn failed(err: HandlerError) -> (String, String) {
        match err {
            HandlerError::Failed { step, message } => (step, message),
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn reads_the_version() {
        let h = handler(CommandConfig {
            version_command: Some(sh("version.sh", &[])),
            ..config()
        });
        assert_eq!(
            h.current_version().await.unwrap().as_deref(),
            Some("1.2.3-rc1")
        );
    }

    #[tokio::test]
    async fn version_is_unknown_without_command_or_output() {
        assert_eq!(handler(config()).current_version().await.unwrap(), None);
        let h = handler(CommandConfig {
            version_command: Some(vec!["sh".into(), "-c".into(), "echo; echo '  '".into()]),
            ..config()
        });
        assert_eq!(h.current_version().await.unwrap(), None);
    }

    #[tokio::test]
    async fn version_command_failure_names_status_and_reason() {
        let h = handler(CommandConfig {
            version_command: Some(sh("fail.sh", &["3"])),
            ..config()
        });
        let err = h.current_version().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "version command: exited with status 3: device not responding"
        );
    }

    #[tokio::test]
    async fn version_command_killed_by_signal() {
        let h = handler(CommandConfig {
            version_command: Some(vec!["sh".into(), "-c".into(), "kill -9 $$".into()]),
            ..config()
        });
        let (step, message) = failed(h.current_version().await.unwrap_err());
        assert_eq!(step, "version command");
        assert_eq!(message, "killed by signal SIGKILL");
    }

    #[tokio::test]
    async fn version_command_timeout_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pids");
        let h = handler(CommandConfig {
            version_command: Some(sh("hang.sh", &[pid_file.to_str().unwrap(), "ignore"])),
            command_timeout: Duration::from_millis(300),
            ..config()
        });
        // The script ignores SIGTERM and would run forever.
        let err = within(h.current_version()).await.unwrap_err();
        match err {
            HandlerError::Timeout { step, after } => {
                assert_eq!(step, "version command");
                assert_eq!(after, Duration::from_millis(300));
            }
            other => panic!("expected Timeout, got {other:?}"),
        }
        let pids = pids(&pid_file).await;
        assert_eq!(pids.len(), 2);
        assert_gone(&pids).await;
        assert!(h.running().is_empty());
    }

    #[tokio::test]
    async fn leftover_processes_do_not_block_a_finished_command() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let h = handler(CommandConfig {
            version_command: Some(sh("leftover.sh", &[pid_file.to_str().unwrap()])),
            ..config()
        });
        // The leftover sleeps 1000 s.
        let version = within(h.current_version()).await.unwrap();
        assert_eq!(version.as_deref(), Some("2.0.1"));
        let leftover = pids(&pid_file).await;
        for &pid in &leftover {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        assert_gone(&leftover).await;
    }

    #[tokio::test]
    async fn executable_by_exit_status() {
        assert!(handler(config()).is_update_executable().await.unwrap());
        let with = |status: &str| {
            handler(CommandConfig {
                executable_command: Some(sh("exit.sh", &[status])),
                ..config()
            })
        };
        assert!(with("0").is_update_executable().await.unwrap());
        assert!(!with("1").is_update_executable().await.unwrap());
        let (step, message) = failed(with("2").is_update_executable().await.unwrap_err());
        assert_eq!(step, "executable command");
        assert_eq!(message, "exited with status 2");
    }

    #[tokio::test]
    async fn executable_command_timeout() {
        let h = handler(CommandConfig {
            executable_command: Some(vec!["sleep".into(), "1000".into()]),
            command_timeout: Duration::from_millis(100),
            ..config()
        });
        let err = h.is_update_executable().await.unwrap_err();
        assert!(matches!(err, HandlerError::Timeout { .. }), "{err:?}");
        assert_eq!(err.to_string(), "executable command: timed out after 100ms");
    }

    #[tokio::test]
    async fn full_pipes_do_not_deadlock_and_the_last_reason_wins() {
        let h = handler(CommandConfig {
            executable_command: Some(sh("flood.sh", &[])),
            ..config()
        });
        let (step, message) = failed(h.is_update_executable().await.unwrap_err());
        assert_eq!(step, "executable command");
        assert_eq!(message, "exited with status 7: final reason");
    }

    #[tokio::test]
    async fn update_reports_progress_and_passes_image_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        let image = image(dir.path());
        let h = handler(CommandConfig {
            update_command: sh("update.sh", &[out.to_str().unwrap(), "two words"]),
            ..config()
        });
        use ProgressStep::*;
        // The engine enters an immediate update at TRANSFERRING.
        let (progress, mut rx) = progress(&[Downloading, Transferring, Updating], Transferring);
        h.update(&image, &progress).await.unwrap();
        assert_eq!(
            kinds(&mut rx),
            vec![
                ProgressKind::Step(Updating),
                ProgressKind::Percent(Updating, 10),
                ProgressKind::Percent(Updating, 50),
                ProgressKind::Percent(Updating, 100),
            ]
        );

        let seen = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = seen.lines().collect();
        let image_path = image.path().to_str().unwrap();
        let args: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("ARG="))
            .collect();
        assert_eq!(args, [out.to_str().unwrap(), "two words", image_path]);
        let digests = image.digests();
        let expected_env = [
            "FOTA_DEVICE_ID=gw-1".to_string(),
            "FOTA_DEVICE_TYPE=sensor-v2".to_string(),
            format!("FOTA_IMAGE={image_path}"),
            "FOTA_IMAGE_SIZE=14".to_string(),
            format!("FOTA_MD5={}", digests.get(ChecksumAlgorithm::Md5).unwrap()),
            format!(
                "FOTA_SHA256={}",
                digests.get(ChecksumAlgorithm::Sha256).unwrap()
            ),
            "FOTA_STEP=update".to_string(),
            "FOTA_VERSION=2.0".to_string(),
        ];
        let env: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("FOTA_"))
            .collect();
        assert_eq!(env, expected_env);
        let cwd = std::env::current_dir().unwrap();
        assert!(
            lines.contains(&format!("PWD={}", cwd.display()).as_str()),
            "{seen}"
        );
        assert!(lines.contains(&"STDIN_BYTES=0"), "{seen}");
        assert!(h.running().is_empty());
    }

    #[tokio::test]
    async fn absent_digests_are_absent_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        let image = image_with(dir.path(), &[ChecksumAlgorithm::Md5]);
        let h = handler(CommandConfig {
            update_command: sh("update.sh", &[out.to_str().unwrap()]),
            ..config()
        });
        let (progress, _rx) = progress(&[ProgressStep::Updating], ProgressStep::Updating);
        h.update(&image, &progress).await.unwrap();
        let seen = std::fs::read_to_string(&out).unwrap();
        assert!(seen.lines().any(|l| l == "SHA256_SET=unset"), "{seen}");
        assert!(seen.lines().any(|l| l.starts_with("FOTA_MD5=")), "{seen}");
    }

    #[tokio::test]
    async fn update_failure_carries_the_stderr_reason() {
        let dir = tempfile::tempdir().unwrap();
        let image = image(dir.path());
        let h = handler(CommandConfig {
            update_command: sh("fail.sh", &["4"]),
            ..config()
        });
        let (progress, _rx) = progress(&[ProgressStep::Updating], ProgressStep::Updating);
        let err = h.update(&image, &progress).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "update command: exited with status 4: device not responding"
        );
    }

    #[tokio::test]
    async fn update_does_not_start_after_the_update_finished() {
        let dir = tempfile::tempdir().unwrap();
        let image = image(dir.path());
        let marker = dir.path().join("ran");
        let h = handler(CommandConfig {
            update_command: vec!["touch".into(), marker.to_str().unwrap().into()],
            ..config()
        });
        let (progress, _rx) = progress(&[ProgressStep::Updating], ProgressStep::Updating);
        progress.canceled().unwrap();
        let (step, _) = failed(h.update(&image, &progress).await.unwrap_err());
        assert_eq!(step, "update command");
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn spawn_failures_name_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let image = image(dir.path());
        let (progress, _rx) = progress(&[ProgressStep::Updating], ProgressStep::Updating);

        let missing = "/nonexistent/flash-tool";
        let h = handler(CommandConfig {
            update_command: vec![missing.into()],
            ..config()
        });
        match h.update(&image, &progress).await.unwrap_err() {
            err @ HandlerError::Io { .. } => {
                assert!(
                    err.to_string()
                        .starts_with(&format!("update command: cannot run {missing}: "))
                );
                let HandlerError::Io { source, .. } = err else {
                    unreachable!()
                };
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected Io, got {other:?}"),
        }

        let not_executable: PathBuf = dir.path().join("flash.sh");
        std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
        let h = handler(CommandConfig {
            version_command: Some(vec![not_executable.to_str().unwrap().into()]),
            ..config()
        });
        let err = h.current_version().await.unwrap_err();
        assert!(
            err.to_string().contains(not_executable.to_str().unwrap()),
            "{err}"
        );
        let HandlerError::Io { source, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);

        let h = handler(CommandConfig {
            update_command: vec![],
            ..config()
        });
        let (step, message) = failed(h.update(&image, &progress).await.unwrap_err());
        assert_eq!(
            (step.as_str(), message.as_str()),
            ("update command", "the command is empty")
        );
    }

    #[tokio::test]
    async fn background_transfer_only_when_configured() {
        assert!(handler(config()).background_transfer().is_none());

        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        let image = image(dir.path());
        let h = handler(CommandConfig {
            transfer_command: Some(sh("update.sh", &[out.to_str().unwrap()])),
            ..config()
        });
        let transfer = h.background_transfer().expect("transfer configured");
        let (progress, mut rx) = progress(
            &[ProgressStep::Transferring, ProgressStep::Updating],
            ProgressStep::Transferring,
        );
        transfer.transfer(&image, &progress).await.unwrap();
        assert_eq!(
            kinds(&mut rx),
            vec![
                ProgressKind::Percent(ProgressStep::Transferring, 10),
                ProgressKind::Percent(ProgressStep::Transferring, 50),
                ProgressKind::Percent(ProgressStep::Transferring, 100),
            ]
        );
        let seen = std::fs::read_to_string(&out).unwrap();
        assert!(seen.lines().any(|l| l == "FOTA_STEP=transfer"), "{seen}");
        assert!(
            seen.lines()
                .any(|l| l == format!("ARG={}", image.path().display())),
            "{seen}"
        );
    }

    /// The engine's timeout: the update future is dropped, then `cancel` is called.
    #[tokio::test]
    async fn dropped_update_then_cancel_leaves_no_process() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pids");
        let image = image(dir.path());
        let h = handler(CommandConfig {
            update_command: sh("hang.sh", &[pid_file.to_str().unwrap(), "ignore"]),
            ..config()
        })
        .with_cancel_grace(Duration::from_secs(600));
        let (progress, mut rx) = progress(&[ProgressStep::Updating], ProgressStep::Updating);
        // Time out once the script is surely running (it reported PROGRESS 1).
        let started = async {
            loop {
                if let Ok(ProgressEvent {
                    kind: ProgressKind::Percent(_, 1),
                    ..
                }) = rx.recv().await
                {
                    break;
                }
            }
        };
        let result = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! {
                r = h.update(&image, &progress) => panic!("update ended: {r:?}"),
                () = started => {}
            }
        })
        .await;
        assert!(result.is_ok(), "the script never started");
        // Nothing is left to wait for: no grace period (10 minutes here) passes.
        within(h.cancel()).await;
        let pids = pids(&pid_file).await;
        assert_eq!(pids.len(), 2);
        assert_gone(&pids).await;
        assert!(h.running().is_empty());
    }

    #[tokio::test]
    async fn dropped_update_under_a_short_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pids");
        let image = image(dir.path());
        let h = handler(CommandConfig {
            update_command: sh("hang.sh", &[pid_file.to_str().unwrap(), "plain"]),
            ..config()
        });
        let (progress, _rx) = progress(&[ProgressStep::Updating], ProgressStep::Updating);
        // Long enough for the script to write its pids on a slow machine; `pids`
        // below tells when it did not.
        let r = tokio::time::timeout(Duration::from_millis(500), h.update(&image, &progress)).await;
        assert!(r.is_err());
        h.cancel().await;
        let pids = pids(&pid_file).await;
        assert_gone(&pids).await;
    }

    #[tokio::test]
    async fn cancel_terminates_a_running_update() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pids");
        let image = image(dir.path());
        let h = handler(CommandConfig {
            update_command: sh("hang.sh", &[pid_file.to_str().unwrap(), "term"]),
            ..config()
        })
        .with_cancel_grace(Duration::from_secs(120));
        let (progress, _rx) = progress(&[ProgressStep::Updating], ProgressStep::Updating);
        // SIGTERM suffices: no wait for the (two-minute) grace period.
        let (result, ()) = tokio::join!(h.update(&image, &progress), async {
            pids(&pid_file).await;
            within(h.cancel()).await;
        });
        assert!(matches!(result, Err(HandlerError::Canceled)), "{result:?}");
        assert_gone(&pids(&pid_file).await).await;
        assert!(h.running().is_empty());
    }

    #[tokio::test]
    async fn cancel_kills_what_ignores_sigterm_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pids");
        let image = image(dir.path());
        let h = handler(CommandConfig {
            transfer_command: Some(sh("hang.sh", &[pid_file.to_str().unwrap(), "ignore"])),
            ..config()
        })
        .with_cancel_grace(Duration::from_millis(200));
        let (progress, _rx) = progress(&[ProgressStep::Transferring], ProgressStep::Transferring);
        let transfer = h.background_transfer().unwrap();
        let (result, elapsed) = tokio::join!(transfer.transfer(&image, &progress), async {
            pids(&pid_file).await;
            let started = Instant::now();
            // SIGKILL after the grace: what ignores SIGTERM would run forever.
            within(h.cancel()).await;
            started.elapsed()
        });
        assert!(matches!(result, Err(HandlerError::Canceled)), "{result:?}");
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
        assert_gone(&pids(&pid_file).await).await;
    }

    /// On the paused clock: no timer (the grace period) is waited on.
    #[tokio::test(start_paused = true)]
    async fn cancel_without_a_running_command_returns_at_once() {
        let h = handler(config());
        let started = tokio::time::Instant::now();
        h.cancel().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
