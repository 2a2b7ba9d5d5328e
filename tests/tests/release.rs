//! The release build, as engines run it: static-pie with packed relocations and its hot
//! functions linked first (crates/cella/build.rs, scripts/cella-cc). scripts/test builds
//! it before the tests.

use cella_tests::{Bundle, require_root, show, skip_unless, unique};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// target/<triple>/release, beside the debug profile these tests were built in.
fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<triple>/debug/deps/<test>-<hash> -> target/<triple>/release
    exe.ancestors().nth(3).expect("target dir").join("release")
}

/// The release binary, or None (a failure under CI) when it was not built.
fn release_cella() -> Option<PathBuf> {
    let bin = release_dir().join("cella");
    skip_unless(
        bin.exists(),
        "no release build: run `cargo build --release -p cella` first (scripts/test does)",
    )
    .then_some(bin)
}

/// The newest `deps/cella-<hash>.order` file: the symbol list the last release link of
/// the binary handed lld.
fn newest_order_file() -> Option<PathBuf> {
    fs::read_dir(release_dir().join("deps"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("cella-") && name.ends_with(".order")
        })
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
}

/// Parses "order-symbols: N listed: X found as listed, Y by demangled name, Z not in
/// this link; ..." into (X, Y, Z).
fn parse_summary(line: &str) -> Option<(u32, u32, u32)> {
    let rest = line.split("listed: ").nth(1)?;
    let mut nums = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().ok());
    Some((nums.next()??, nums.next()??, nums.next()??))
}

#[test]
fn release_link_finds_the_hot_function_list_in_its_objects() {
    if release_cella().is_none() {
        return;
    }
    let order = newest_order_file().unwrap_or_else(|| {
        panic!(
            "no cella-*.order in {}: the release link did not go through scripts/cella-cc, \
             or the list could not be matched (python3, nm and c++filt)",
            release_dir().join("deps").display()
        )
    });
    let text = fs::read_to_string(&order).unwrap();
    let first = text.lines().next().unwrap_or("");
    let (exact, by_name, missing) = parse_summary(first)
        .unwrap_or_else(|| panic!("{}: no summary line: {first:?}", order.display()));
    let found = exact + by_name;
    // Below this the list is stale (functions renamed or removed): regenerate it with
    // scripts/hot-symbols, or the runtime's memory use creeps back up.
    assert!(
        found * 10 >= (found + missing) * 9,
        "{}: {first}\nless than 90% of crates/cella/hot-symbols.txt is in the binary: run scripts/hot-symbols",
        order.display()
    );
    assert!(
        text.lines().count() > 1000,
        "{}: only {} symbols ordered",
        order.display(),
        text.lines().count()
    );
}

#[test]
fn release_binary_runs_a_container() {
    if !require_root() {
        return;
    }
    let Some(cella) = release_cella() else {
        return;
    };
    let out = Command::new(&cella).arg("--version").output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    // The whole path an engine takes, through the relocated, reordered static binary:
    // re-execution from the read-only copy, clone, init, exec, wait, delete.
    let b = Bundle::new(
        "release",
        &["sh", "-c", "echo hello from $(hostname); exit 3"],
    );
    let root = cella_tests::scratch_root().join(unique("release-state"));
    let id = unique("rel");
    let run = |args: &[&str]| {
        Command::new(&cella)
            .arg("--root")
            .arg(&root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&["run", "--bundle", b.dir.to_str().unwrap(), &id]);
    let _ = run(&["delete", "--force", &id]);
    let _ = fs::remove_dir_all(&root);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello from"),
        "{}",
        show(&out)
    );
    assert!(!Path::new(&root).join(&id).exists());
}

#[test]
fn summary_line_parses() {
    assert_eq!(
        parse_summary(
            "# order-symbols: 1706 listed: 1500 found as listed, 150 by demangled name, 56 not in this link; 1702 symbols ordered"
        ),
        Some((1500, 150, 56))
    );
    assert_eq!(parse_summary("# something else"), None);
}
