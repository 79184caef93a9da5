//! Gives back the mappings of file pages the process ran or read once and does
//! not need mapped: start-up's (argument and config parsing, the TLS roots,
//! recovery) and, in `run`, each cycle's (the next cycle comes minutes later).
//!
//! Mapped executable file pages stay mapped until memory runs short, and the
//! kernel protects them longer than other page cache (they get a second trip
//! round the active list), so on a gateway with little RAM they push out more
//! useful cache first; the kernel also maps up to 64 KiB of cached neighbours
//! around each fault, so a cycle leaves most of the binary and of libc
//! resident. Dropping the mappings leaves resident what the process runs
//! afterwards, faulted back in from the page cache as it runs it (a minor fault
//! each, no I/O while the pages are cached).
//!
//! Only private file mappings that are not writable and hold no page of the
//! process's own are dropped: each of their pages is still the file's, so it
//! reads back unchanged. A mapping that was written before it was made read-only
//! (RELRO, relocated at start-up) holds anonymous copies and is left alone.

/// Drops this process's page mappings of read-only file segments that hold
/// only the file's own pages (the binary's and the libraries' code and
/// read-only data; not the vDSO). Errors are ignored: at worst the pages stay
/// resident as before.
pub fn release_file_pages() {
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return;
        };
        for (start, end) in unmodified_file_segments(&smaps) {
            // SAFETY: the range is a whole private, non-writable file mapping of
            // this process (page-aligned by the kernel) with no anonymous
            // (copied-on-write) page. MADV_DONTNEED only removes its page table
            // entries; each page is read back from the same file on its next
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

/// The address ranges of `/proc/self/smaps` mappings of a file (a path, not
/// `[vdso]`) that are private, never writable now, and have no anonymous pages.
fn unmodified_file_segments(smaps: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    // The current mapping's range, if it is a candidate, until its
    // `Anonymous:` line says whether it holds pages of its own.
    let mut candidate = None;
    for line in smaps.lines() {
        if let Some(range) = mapping_header(line) {
            candidate = range;
        } else if let Some(kb) = line.strip_prefix("Anonymous:") {
            let own = kb.trim().trim_end_matches("kB").trim();
            if let (Some(range), Ok(0)) = (candidate.take(), own.parse::<u64>()) {
                found.push(range);
            }
        }
    }
    found
}

/// For a mapping's header line (`start-end perms offset dev inode path`):
/// `Some(Some(range))` when it is a candidate, `Some(None)` when it is not;
/// `None` for the other lines of `smaps`.
fn mapping_header(line: &str) -> Option<Option<(usize, usize)>> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?.as_bytes();
    let path = fields.nth(3).unwrap_or("");
    let candidate = matches!(perms, [b'r', b'-', _, b'p']) && path.starts_with('/') && end > start;
    Some(candidate.then_some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_read_only_file_mappings_without_pages_of_their_own() {
        let smaps = "\
55d0c0a00000-55d0c0b00000 r--p 00000000 fe:01 131 /usr/bin/fota-agent
Size:               1024 kB
Rss:                 448 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
55d0c0b00000-55d0c1000000 r-xp 00100000 fe:01 131 /usr/bin/fota-agent
Anonymous:             0 kB
55d0c1000000-55d0c1100000 r--p 00600000 fe:01 131 /usr/bin/fota-agent
Anonymous:           132 kB
55d0c1100000-55d0c1101000 rw-p 00700000 fe:01 131 /usr/bin/fota-agent
Anonymous:             4 kB
7f00a0000000-7f00a0021000 rw-p 00000000 00:00 0
Anonymous:            20 kB
7f00a1028000-7f00a117d000 r-xp 00028000 fe:01 2042 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 488 kB
Anonymous:             0 kB
7f00a2000000-7f00a2001000 r-xs 00000000 fe:01 77 /dev/shm/shared
Anonymous:             0 kB
7f00a3000000-7f00a3001000 rwxp 00000000 fe:01 78 /tmp/jit
Anonymous:             0 kB
7f00a4000000-7f00a4001000 r-xp 00000000 fe:01 79 /usr/lib/debugged.so
Anonymous:             4 kB
7ffd5e5f0000-7ffd5e5f2000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
garbage line
Anonymous:             0 kB
";
        assert_eq!(
            unmodified_file_segments(smaps),
            vec![
                (0x55d0c0a00000, 0x55d0c0b00000),
                (0x55d0c0b00000, 0x55d0c1000000),
                (0x7f00a1028000, 0x7f00a117d000)
            ]
        );
    }

    /// This process's own smaps has the binary's code among the segments.
    #[test]
    fn finds_this_process_code() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let here = finds_this_process_code as fn() as usize;
        assert!(
            unmodified_file_segments(&smaps)
                .iter()
                .any(|&(start, end)| (start..end).contains(&here)),
            "no segment holds {here:#x}"
        );
    }

    /// The process runs on after its pages are dropped: they come back from
    /// the file as they run.
    #[test]
    fn code_runs_on_after_the_release() {
        release_file_pages();
        let text: String = (1..=3).map(|i| format!("{i}")).collect();
        assert_eq!(text, "123");
        release_file_pages();
        assert_eq!(format!("{:?}", Some(text.len())), "Some(3)");
    }
}
