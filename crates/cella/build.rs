//! Link-time layout of release builds of `cella` (nothing here changes the code).
//!
//! Engines start one runtime process per lifecycle command, and the kernel maps a
//! binary's pages in 64 KiB windows around each page a process touches. With the
//! functions those commands execute scattered over a 5 MB binary, nearly all of it
//! became resident in every one of them. So:
//!
//! - `hot-symbols.txt` lists those functions (made by `scripts/hot-symbols`), and lld
//!   puts them first in .text;
//! - relative relocations are packed (`-z pack-relative-relocs`), so the static-pie
//!   start reads a few KiB of them instead of about 300 KiB.
//!
//! Both apply only when cargo links through `scripts/cella-cc` (.cargo/config.toml),
//! which matches the list to the build and drops it for a linker other than lld; and
//! packing only where the C library's startup code understands it (glibc 2.36 and
//! later).

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=hot-symbols.txt");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let release = env::var("PROFILE").as_deref() == Ok("release");
    let wrapper = env::var("RUSTC_LINKER").is_ok_and(|l| l.ends_with("scripts/cella-cc"));
    if !release || !wrapper {
        return;
    }
    let list = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("hot-symbols.txt");
    if !list.is_file() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    let gnu = env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if gnu && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the build host's glibc (the one linked in) is at least `major.minor`.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}
