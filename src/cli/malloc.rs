//! glibc malloc tuning for a small long-running daemon. By default glibc gives
//! each thread that allocates its own arena (up to 8 per core), and each arena
//! keeps freed memory mapped: the runtime's worker, the blocking pool and the
//! download's writer and syncer threads each hold their own heap. One arena
//! serves the agent's few threads at no measurable cost in speed (see
//! docs/performance.md, "Footprint") and keeps idle RSS down.

/// Caps malloc at one arena, unless the operator chose otherwise through
/// `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` (glibc reads those itself). Call first
/// thing in `main`, before any thread exists.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let chosen = std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("malloc.arena_max"));
        if !chosen {
            // SAFETY: mallopt only sets an allocator parameter; no other thread
            // exists yet to race with it. A refusal (0) leaves glibc's default.
            unsafe {
                nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
            }
        }
    }
}
