//! What is remembered about a partly downloaded file, beside it as
//! `<file>.part.json`, so a download interrupted by a network drop, a kill or a
//! power cut continues where it stopped — but only from the same URL and only when
//! the server can prove (ETag or Last-Modified, sent back as `If-Range`) that the
//! file has not changed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The sidecar record of a partial download.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Total size the server announced, if any.
    pub total: Option<u64>,
    /// Bytes known to be on stable storage (fsynced); after a power cut only these
    /// are trusted.
    pub durable: u64,
    /// The kernel boot the record was written in. Within the same boot, bytes in the
    /// page cache survive a killed process, so the whole file is trusted; after a
    /// reboot, only `durable` bytes are.
    pub boot_id: Option<String>,
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

impl Partial {
    /// How many bytes of a partial file of `on_disk` bytes can be resumed from.
    pub fn trusted_len(&self, on_disk: u64) -> u64 {
        if self.boot_id.is_some() && self.boot_id == boot_id() {
            on_disk
        } else {
            on_disk.min(self.durable)
        }
    }

    /// The `If-Range` validator: a strong ETag, else Last-Modified.
    pub fn validator(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|e| !e.starts_with("W/"))
            .or(self.last_modified.as_deref())
    }
}

pub fn part_path(dest: &Path) -> PathBuf {
    with_suffix(dest, ".part")
}

pub fn meta_path(dest: &Path) -> PathBuf {
    with_suffix(dest, ".part.json")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The record for `dest`, if one exists and parses.
pub fn load(dest: &Path) -> Option<Partial> {
    let bytes = std::fs::read(meta_path(dest)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes the record atomically (temp file + rename), so it is never torn.
pub fn save(dest: &Path, partial: &Partial) -> std::io::Result<()> {
    let path = meta_path(dest);
    let dir = crate::persist::parent_dir(&path);
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer(&mut tmp, partial)?;
    tmp.as_file().sync_all()?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(())
}

/// Forgets the partial download (file and record).
pub fn discard(dest: &Path) {
    let _ = std::fs::remove_file(part_path(dest));
    let _ = std::fs::remove_file(meta_path(dest));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(boot_id: Option<String>, durable: u64) -> Partial {
        Partial {
            url: "http://x/fw.bin".into(),
            durable,
            boot_id,
            ..Partial::default()
        }
    }

    /// Within this boot the page cache kept every byte written; after a reboot
    /// (or with no boot recorded) only the fsynced prefix is trusted.
    #[test]
    fn trusted_len_depends_on_the_boot() {
        let this = boot_id();
        // The kernel's boot id, a UUID: not empty, not made up.
        let uuid = this.as_deref().expect("no /proc/sys/kernel/random/boot_id");
        assert_eq!(uuid.len(), 36, "{uuid}");
        assert!(
            uuid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()),
            "{uuid}"
        );
        assert_eq!(boot_id(), this, "the same boot, the same id");
        assert_eq!(record(this, 100).trusted_len(300), 300);
        assert_eq!(record(Some("another".into()), 100).trusted_len(300), 100);
        assert_eq!(record(None, 100).trusted_len(300), 100);
        // A file cut shorter than its record: never more than is on disk.
        assert_eq!(record(Some("another".into()), 100).trusted_len(40), 40);
    }

    #[test]
    fn validator_is_a_strong_etag_else_last_modified() {
        let mut p = record(None, 0);
        assert_eq!(p.validator(), None);
        p.last_modified = Some("Wed, 21 Oct 2015 07:28:00 GMT".into());
        assert_eq!(p.validator(), p.last_modified.as_deref());
        p.etag = Some("W/\"weak\"".into());
        assert_eq!(p.validator(), p.last_modified.as_deref());
        p.etag = Some("\"strong\"".into());
        assert_eq!(p.validator(), Some("\"strong\""));
    }

    #[test]
    fn record_saved_loaded_and_discarded_beside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("fw.bin");
        assert_eq!(part_path(&dest), dir.path().join("fw.bin.part"));
        assert_eq!(meta_path(&dest), dir.path().join("fw.bin.part.json"));
        assert_eq!(load(&dest), None);
        let mut p = record(Some("boot".into()), 7);
        p.total = Some(9);
        save(&dest, &p).unwrap();
        assert_eq!(load(&dest), Some(p));
        std::fs::write(meta_path(&dest), b"{torn").unwrap();
        assert_eq!(load(&dest), None, "a record that does not parse is none");
        std::fs::write(part_path(&dest), b"1234567").unwrap();
        discard(&dest);
        assert!(!part_path(&dest).exists() && !meta_path(&dest).exists());
    }
}
