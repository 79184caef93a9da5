//! Gives back the code pages that start-up ran and the rest of the process does
//! not run again (argument and config parsing, loading the TLS roots, recovery).
//!
//! Executed file pages stay mapped until memory runs short, and the kernel
//! protects them longer than other page cache (mapped executable pages get a
//! second trip round the active list), so on a gateway with little RAM they push
//! out more useful cache first; the kernel also maps up to 64 KiB of cached
//! neighbours around each fault, so start-up leaves most of the binary and of
//! libc resident. Dropping the mappings of the executable segments once start-up
//! is over leaves resident what the process runs afterwards, faulted back in
//! from the page cache as it runs it (a minor fault each, no I/O while the
//! pages are cached). Only read-and-execute file mappings are dropped: they are
//! never written, so nothing of the process's own is lost (a writable or
//! relocated mapping such as RELRO would be, and is left alone).

/// Drops this process's page mappings of executable file segments (the binary,
/// libc, the dynamic loader; not the vDSO). Errors are ignored: at worst the
/// pages stay resident as before.
pub fn release_startup_code() {
    #[cfg(target_os = "linux")]
    {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return;
        };
        for (start, end) in executable_file_segments(&maps) {
            // SAFETY: the range is a whole private read+execute file mapping of
            // this process (page-aligned by the kernel). MADV_DONTNEED only
            // removes its page table entries; as the pages were never written
            // (not writable), each is read back from the same file on its next
            // access, unchanged.
            unsafe {
                nix::libc::madvise(
                    start as *mut nix::libc::c_void,
                    end - start,
                    nix::libc::MADV_DONTNEED,
                );
            }
        }
    }
}

/// The address ranges of `/proc/self/maps` lines that map a file (a path, not
/// `[vdso]`) private, readable and executable, never writable.
fn executable_file_segments(maps: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?;
            if perms != "r-xp" || !path.starts_with('/') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (end > start).then_some((start, end))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_read_execute_file_mappings() {
        let maps = "\
55d0c0a00000-55d0c0b00000 r--p 00000000 fe:01 131 /usr/bin/fota-agent
55d0c0b00000-55d0c1000000 r-xp 00100000 fe:01 131 /usr/bin/fota-agent
55d0c1000000-55d0c1100000 r--p 00600000 fe:01 131 /usr/bin/fota-agent
55d0c1100000-55d0c1101000 rw-p 00700000 fe:01 131 /usr/bin/fota-agent
7f00a0000000-7f00a0021000 rw-p 00000000 00:00 0
7f00a1028000-7f00a117d000 r-xp 00028000 fe:01 2042 /usr/lib/x86_64-linux-gnu/libc.so.6
7f00a2000000-7f00a2001000 r-xs 00000000 fe:01 77 /dev/shm/shared
7f00a3000000-7f00a3001000 rwxp 00000000 fe:01 78 /tmp/jit
7ffd5e5f0000-7ffd5e5f2000 r-xp 00000000 00:00 0 [vdso]
garbage line
";
        assert_eq!(
            executable_file_segments(maps),
            vec![
                (0x55d0c0b00000, 0x55d0c1000000),
                (0x7f00a1028000, 0x7f00a117d000)
            ]
        );
    }

    /// The process runs on after its code pages are dropped: they come back
    /// from the file as they run.
    #[test]
    fn code_runs_on_after_the_release() {
        release_startup_code();
        let text: String = (1..=3).map(|i| format!("{i}")).collect();
        assert_eq!(text, "123");
        release_startup_code();
        assert_eq!(format!("{:?}", Some(text.len())), "Some(3)");
    }
}
