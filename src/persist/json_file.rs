//! One JSON document on disk. A save is atomic and durable (temp file in the same
//! folder, write, fsync, rename, folder fsync), so a power cut leaves the old or
//! the new document, never a torn one. A document that does not parse is moved
//! aside — never deleted, never over an earlier one — and the caller starts
//! afresh. Temp files a killed save left behind are removed when the file is
//! opened.

use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{PersistError, fsync_dir, io_err, parent_dir};

/// Temp files of this process are never older than this: a temp file older than
/// it (less a margin for coarse file timestamps) is a killed save's leftover,
/// not a save in progress.
static STARTED: LazyLock<SystemTime> = LazyLock::new(SystemTime::now);
const TIMESTAMP_MARGIN: Duration = Duration::from_secs(1);

/// A JSON document at a fixed path.
#[derive(Debug)]
pub struct JsonFile<T> {
    path: PathBuf,
    pretty: bool,
    _doc: PhantomData<fn() -> T>,
}

impl<T> Clone for JsonFile<T> {
    fn clone(&self) -> Self {
        JsonFile {
            path: self.path.clone(),
            pretty: self.pretty,
            _doc: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> JsonFile<T> {
    /// The document at `path`, pretty-printed on save. Creates its folder and
    /// removes temp files a killed save left there; a failure is only logged (the
    /// next save reports it).
    pub fn open(path: impl Into<PathBuf>) -> JsonFile<T> {
        let file = JsonFile::at(path);
        let dir = file.dir();
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!("{}: {e}", dir.display());
        }
        remove_leftovers(dir);
        file
    }

    /// The document at `path`, with no look at its folder: for one of many
    /// documents in a folder that [`remove_leftovers`] cleaned when it was opened.
    pub fn at(path: impl Into<PathBuf>) -> JsonFile<T> {
        LazyLock::force(&STARTED);
        JsonFile {
            path: path.into(),
            pretty: true,
            _doc: PhantomData,
        }
    }

    /// Saves without indentation (files that were always written that way).
    pub fn compact(mut self) -> Self {
        self.pretty = false;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self) -> &Path {
        parent_dir(&self.path)
    }

    /// The document; `None` when there is none yet. One that does not parse is
    /// moved aside (and logged) and reported as [`PersistError::Corrupt`]; the
    /// next load finds none.
    pub fn load(&self) -> Result<Option<T>, PersistError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        match serde_json::from_slice(&bytes) {
            Ok(doc) => Ok(Some(doc)),
            Err(source) => {
                let moved_to = move_aside(&self.path).map_err(io_err(&self.path))?;
                let err = PersistError::Corrupt {
                    path: self.path.clone(),
                    moved_to,
                    source,
                };
                tracing::warn!("{err}");
                Err(err)
            }
        }
    }

    /// The document, or the default when there is none or it cannot be read (a
    /// corrupt one is moved aside; both are logged).
    pub fn load_or_default(&self) -> T
    where
        T: Default,
    {
        match self.load() {
            Ok(doc) => doc.unwrap_or_default(),
            Err(PersistError::Corrupt { .. }) => T::default(),
            Err(e) => {
                tracing::warn!("{e}");
                T::default()
            }
        }
    }

    /// The bytes a save writes.
    pub fn encode(&self, doc: &T) -> Result<Vec<u8>, PersistError> {
        let json = if self.pretty {
            serde_json::to_vec_pretty(doc)
        } else {
            serde_json::to_vec(doc)
        };
        json.map_err(|source| PersistError::Encode {
            path: self.path.clone(),
            source,
        })
    }

    /// Replaces the document atomically and durably, off the async runtime's
    /// threads (an fsync can take long on flash).
    pub async fn save(&self, doc: &T) -> Result<(), PersistError> {
        let bytes = self.encode(doc)?;
        let path = self.path.clone();
        spawn_write(path, bytes).await
    }

    /// [`JsonFile::save`] for callers that are not async. On a multi-threaded
    /// runtime the write runs in `block_in_place` (the worker's other tasks move
    /// on); unlike a detached blocking task it is never still in flight after
    /// the calling task was aborted.
    pub fn save_blocking(&self, doc: &T) -> Result<(), PersistError> {
        let bytes = self.encode(doc)?;
        off_runtime(|| write_atomic(&self.path, &bytes))
    }
}

/// Runs `f`, which blocks, without stalling a multi-threaded runtime's worker.
pub(super) fn off_runtime<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Runs [`write_atomic`] on the blocking pool.
async fn spawn_write(path: PathBuf, bytes: Vec<u8>) -> Result<(), PersistError> {
    let at = path.clone();
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
        .await
        .map_err(|e| io_err(&at)(std::io::Error::other(e)))?
}

/// Temp file `.<name>.<pid>-XXXXXX.tmp` beside `path`, write, fsync, rename
/// over `path`, fsync of the folder.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    LazyLock::force(&STARTED);
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(path))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    tmp.write_all(bytes).map_err(io_err(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    fsync_dir(dir)
}

/// `.<name>.<pid>-`: the pid tells a killed process's leftover from a save of
/// a live one, whatever the file's age.
fn temp_prefix(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    format!(".{name}.{}-", std::process::id())
}

/// Whether `name` is a temp file of a save: ours (`.<name>.<pid>-XXXXXX.tmp`,
/// or `.<name>.XXXXXX.tmp` of earlier versions) or `.tmpXXXXXX` (tempfile's
/// default, older still).
fn is_temp_name(name: &str) -> bool {
    let ours = name.starts_with('.') && name.ends_with(".tmp") && name.len() > 5;
    let legacy = name.len() == 10 && name.starts_with(".tmp");
    ours || legacy
}

/// The pid in a temp file's name (`.<name>.<pid>-XXXXXX.tmp`), if it has one.
fn temp_pid(name: &str) -> Option<i32> {
    let stem = name.strip_suffix(".tmp")?;
    let (head, _random) = stem.rsplit_once('-')?;
    head.rsplit('.').next()?.parse().ok()
}

/// Whether the temp file `name`, modified at `modified`, is a killed save's
/// leftover: its process is gone (this one, alive, never is), or (no pid in the
/// name) it is older than this process.
fn is_leftover(name: &str, modified: Option<SystemTime>) -> bool {
    match temp_pid(name) {
        Some(pid) => matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        ),
        None => modified.is_some_and(|t| t < *STARTED - TIMESTAMP_MARGIN),
    }
}

/// Removes the temp files in `dir` that no save of this process is writing:
/// those a killed save left behind.
pub fn remove_leftovers(dir: &Path) {
    LazyLock::force(&STARTED);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !is_temp_name(&name) {
            continue;
        }
        let modified = entry.metadata().and_then(|m| m.modified()).ok();
        if is_leftover(&name, modified) && entry.file_type().is_ok_and(|t| t.is_file()) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(
                    "removed {} (left by an interrupted save)",
                    entry.path().display()
                ),
                Err(e) => tracing::warn!("{}: {e}", entry.path().display()),
            }
        }
    }
}

/// Renames `path` to `<name>.corrupt-<unix secs>`, or `…-<n>` with the first `n`
/// whose name is free, so a second corrupt file never replaces the first.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut base = path.as_os_str().to_os_string();
    base.push(format!(".corrupt-{secs}"));
    let mut candidate = PathBuf::from(&base);
    let mut n = 0u32;
    while candidate.symlink_metadata().is_ok() {
        n += 1;
        let mut next = base.clone();
        next.push(format!("-{n}"));
        candidate = PathBuf::from(next);
    }
    std::fs::rename(path, &candidate)?;
    Ok(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    type Doc = BTreeMap<String, u32>;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn round_trips_without_leaving_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = JsonFile::<Doc>::open(dir.path().join("sub/doc.json"));
        assert_eq!(file.load().unwrap(), None);
        let doc: Doc = [("a".to_string(), 1)].into();
        file.save(&doc).await.unwrap();
        file.save_blocking(&doc).unwrap();
        assert_eq!(file.load().unwrap(), Some(doc.clone()));
        assert_eq!(names(&dir.path().join("sub")), vec!["doc.json"]);
        let compact = JsonFile::<Doc>::open(dir.path().join("c.json")).compact();
        compact.save_blocking(&doc).unwrap();
        assert_eq!(std::fs::read(compact.path()).unwrap(), br#"{"a":1}"#);
    }

    #[test]
    fn corrupt_files_get_names_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let file = JsonFile::<Doc>::open(dir.path().join("doc.json"));
        let mut moved = Vec::new();
        for i in 0..3 {
            std::fs::write(file.path(), format!("{{broken {i}")).unwrap();
            let Err(PersistError::Corrupt { moved_to, .. }) = file.load() else {
                panic!("expected Corrupt");
            };
            moved.push(moved_to);
        }
        // Within one second: three names, each file kept with its own content.
        for (i, m) in moved.iter().enumerate() {
            assert_eq!(std::fs::read_to_string(m).unwrap(), format!("{{broken {i}"));
            let name = m.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with("doc.json.corrupt-"), "{name}");
        }
        assert_eq!(names(dir.path()).len(), 3);
        assert_eq!(file.load_or_default(), Doc::default());
    }

    #[test]
    fn open_removes_what_a_killed_save_left_but_not_a_save_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        // A pid no process has (above the kernel's pid_max limit of 2^22).
        let dead = ".doc.json.99999999-Zz9Yy8.tmp";
        let live = format!(".doc.json.{}-Xx1Ww2.tmp", std::process::id());
        std::fs::write(dir.path().join(dead), b"{").unwrap();
        std::fs::write(dir.path().join(&live), b"{").unwrap();
        let leftovers = [".doc.json.a1b2c3.tmp", ".tmpAbC123"];
        for name in leftovers.iter().chain([&".doc.json.fresh1.tmp"]) {
            std::fs::write(dir.path().join(name), b"{").unwrap();
        }
        for name in leftovers {
            let f = std::fs::File::options()
                .write(true)
                .open(dir.path().join(name))
                .unwrap();
            f.set_modified(old).unwrap();
        }
        std::fs::write(dir.path().join("other.json"), b"{}").unwrap();
        let _file = JsonFile::<Doc>::open(dir.path().join("doc.json"));
        assert_eq!(
            names(dir.path()),
            vec![live.as_str(), ".doc.json.fresh1.tmp", "other.json"]
        );
    }

    #[tokio::test]
    async fn an_async_save_writes_the_document() {
        let dir = tempfile::tempdir().unwrap();
        let file = JsonFile::<Doc>::open(dir.path().join("doc.json"));
        let doc: Doc = [("b".to_string(), 2)].into();
        file.save(&doc).await.unwrap();
        assert_eq!(file.load().unwrap(), Some(doc));
        // A save that cannot write says so (the folder is a file).
        let blocked = JsonFile::<Doc>::at(dir.path().join("doc.json/inner.json"));
        assert!(matches!(
            blocked.save(&Doc::default()).await,
            Err(PersistError::Io { .. })
        ));
    }

    #[test]
    fn an_unreadable_document_is_an_error_not_an_absent_one() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the document should be: EISDIR, not "none yet".
        let file = JsonFile::<Doc>::open(dir.path().join("doc.json"));
        std::fs::create_dir(file.path()).unwrap();
        assert!(matches!(file.load(), Err(PersistError::Io { .. })));
        assert!(file.path().is_dir(), "nothing was moved aside");
    }

    #[test]
    fn a_bare_file_name_lives_in_the_current_folder() {
        assert_eq!(parent_dir(Path::new("doc.json")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/doc.json")), Path::new("a"));
        assert_eq!(JsonFile::<Doc>::at("doc.json").dir(), Path::new("."));
    }

    /// On a multi-threaded runtime a blocking save hands its worker's other
    /// tasks to another thread: with one worker, a task spawned before the save
    /// still runs while the save blocks.
    #[test]
    fn a_blocking_save_does_not_stall_the_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let ran = rt.block_on(async {
            tokio::spawn(async {
                let (tx, rx) = std::sync::mpsc::channel();
                tokio::spawn(async move { tx.send(()).unwrap() });
                off_runtime(|| rx.recv_timeout(Duration::from_secs(10)))
            })
            .await
            .unwrap()
        });
        assert_eq!(ran, Ok(()), "the other task never ran during the save");
    }

    #[test]
    fn what_counts_as_a_temp_file() {
        for name in [
            ".doc.json.123-AbC123.tmp",
            ".doc.json.a1b2c3.tmp",
            ".tmpAbC123",
        ] {
            assert!(is_temp_name(name), "{name}");
        }
        // A document, and names that only look half like a temp file.
        for name in [
            "doc.json",
            "state.json",
            "doc.json.tmp",
            ".doc.json",
            ".tmp",
            "..tmp",
            ".tmpAbC12",
        ] {
            assert!(!is_temp_name(name), "{name}");
        }
    }

    #[test]
    fn a_temp_file_without_a_pid_is_a_leftover_only_when_older_than_the_process() {
        let started = *STARTED;
        let name = ".doc.json.a1b2c3.tmp";
        assert!(is_leftover(name, Some(started - Duration::from_secs(5))));
        // Within the timestamp margin, or newer: maybe a save of ours.
        assert!(!is_leftover(name, Some(started - TIMESTAMP_MARGIN)));
        assert!(!is_leftover(name, Some(started)));
        assert!(!is_leftover(name, Some(SystemTime::now())));
        assert!(!is_leftover(name, None));
        // With a pid: whether that process lives, whatever the age.
        let ours = format!(".doc.json.{}-AbC123.tmp", std::process::id());
        assert!(!is_leftover(&ours, Some(UNIX_EPOCH)));
        assert!(is_leftover(
            ".doc.json.99999999-AbC123.tmp",
            Some(SystemTime::now())
        ));
    }

    #[test]
    fn saves_name_their_process_in_the_temp_file() {
        let path = Path::new("/x/doc.json");
        let name = format!("{}AbC123.tmp", temp_prefix(path));
        assert!(is_temp_name(&name));
        assert_eq!(temp_pid(&name), Some(std::process::id() as i32));
        assert_eq!(temp_pid(".doc.json.a1b2c3.tmp"), None);
        assert_eq!(temp_pid(".tmpAbC123"), None);
    }
}
