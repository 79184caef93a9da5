//! Files of the directory source, read defensively: operators (and whatever
//! writes into the firmware folder) can leave FIFOs, device nodes and symlinks
//! there. A FIFO read would block the cycle forever, `/dev/zero` would grow memory
//! without bound, and a symlink to `/etc/passwd` would be offered as an image. So
//! every path is resolved, must stay inside the firmware directory and be a
//! regular file, and descriptions are read with a size cap.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The largest `*.properties` file read: descriptions are a few lines.
pub const MAX_PROPERTIES_SIZE: u64 = 64 * 1024;

/// `path` with every symlink resolved, when it stays inside `root` (itself
/// resolved) and is a regular file; otherwise why not (the caller names `path`).
pub fn resolve_regular(path: &Path, root: &Path) -> Result<(PathBuf, Metadata), String> {
    let real = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
    let real_root = std::fs::canonicalize(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if !real.starts_with(&real_root) {
        return Err(format!(
            "resolves to {}, outside the firmware directory {}",
            real.display(),
            real_root.display()
        ));
    }
    let meta = std::fs::metadata(&real).map_err(|e| format!("{}: {e}", real.display()))?;
    if !meta.is_file() {
        return Err(format!("not a regular file ({})", kind(&meta)));
    }
    Ok((real, meta))
}

/// The bytes of `path` (resolved inside `root`, a regular file), at most `cap`.
/// Opened non-blocking, and the opened file checked again, so a FIFO swapped in
/// after the check cannot block the read.
pub fn read_capped(path: &Path, root: &Path, cap: u64) -> Result<Vec<u8>, String> {
    let (real, meta) = resolve_regular(path, root)?;
    if meta.len() > cap {
        return Err(too_large(meta.len(), cap));
    }
    let file = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOFOLLOW)
        .open(&real)
        .map_err(|e| format!("cannot open: {e}"))?;
    let opened = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !opened.is_file() {
        return Err(format!("not a regular file ({})", kind(&opened)));
    }
    let mut bytes = Vec::with_capacity(opened.len().min(cap) as usize);
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(too_large(bytes.len() as u64, cap));
    }
    Ok(bytes)
}

fn too_large(size: u64, cap: u64) -> String {
    format!("larger than the {} KiB limit ({size} bytes)", cap / 1024)
}

/// What a file that is not a regular one is, for the skip reason.
fn kind(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_device_outside_and_oversize_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let fifo = root.join("f.properties");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(read_capped(&fifo, root, 10).unwrap_err().contains("FIFO"));
        let zero = root.join("z.properties");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(
            read_capped(&zero, root, 10)
                .unwrap_err()
                .contains("outside")
        );
        let big = root.join("big.properties");
        std::fs::write(&big, [b'a'; 11]).unwrap();
        assert!(read_capped(&big, root, 10).unwrap_err().contains("limit"));
        std::fs::write(&big, [b'a'; 10]).unwrap();
        assert_eq!(read_capped(&big, root, 10).unwrap().len(), 10);
        let inside = root.join("link.properties");
        std::os::unix::fs::symlink("big.properties", &inside).unwrap();
        assert_eq!(
            resolve_regular(&inside, root).unwrap().0,
            big.canonicalize().unwrap()
        );
    }
}
