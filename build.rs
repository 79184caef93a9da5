//! Link flags of the agent binary.
//!
//! PIE executables carry one relocation per pointer in their read-only data
//! (vtables, string tables): 256 KiB of `.rela.dyn` in the agent. Packed
//! relative relocations (`DT_RELR`) encode the same in a few KiB, keeping
//! ASLR. They need glibc 2.36 (Debian 12) at run time: build for an older
//! target with `FOTA_AGENT_NO_RELR=1`.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FOTA_AGENT_NO_RELR");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux_gnu && std::env::var_os("FOTA_AGENT_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
