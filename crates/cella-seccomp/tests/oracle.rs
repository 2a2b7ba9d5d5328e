//! Oracle test: cella's filter and libseccomp's filter for the same Docker-like profile
//! must give the same verdict (action and data) for every syscall number of every ABI,
//! with boundary argument values. Both programs run in cella's user-space interpreter.

use std::path::{Path, PathBuf};
use std::process::Command;

use cella_seccomp::bpf::{
    self, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, Insn, SeccompData, X32_SYSCALL_BIT,
};
use cella_seccomp::compile;
use oci_spec::runtime::LinuxSeccomp;

const PYTHON: &str = "/usr/bin/python3";

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Skips (or fails under CI=true) when Debian's python3-seccomp is missing.
fn libseccomp_available() -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import seccomp"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("python3-seccomp is required (apt-get install python3-seccomp)");
        }
        eprintln!("SKIPPED: python3-seccomp is not installed");
    }
    ok
}

/// Removes a file even when the test fails.
struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// libseccomp's program for `profile` and the names it skipped.
fn libseccomp_program(profile: &Path) -> (Vec<Insn>, Vec<String>) {
    let out = TempFile(std::env::temp_dir().join(format!(
        "cella-oracle-{}-{}.bpf",
        std::process::id(),
        profile.file_stem().unwrap().to_string_lossy()
    )));
    let res = Command::new(PYTHON)
        .arg(data_dir().join("libseccomp_export.py"))
        .arg(profile)
        .arg(&out.0)
        .output()
        .expect("run python3");
    assert!(
        res.status.success(),
        "libseccomp export failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let skipped = String::from_utf8(res.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    (bpf::from_bytes(&std::fs::read(&out.0).unwrap()), skipped)
}

/// Boundary values around every constant in the profile, plus the extremes.
fn arg_values(p: &LinuxSeccomp) -> Vec<u64> {
    let mut v: Vec<u64> = vec![0, 1, 0xffff_ffff, 1 << 32, u64::MAX, 0x8000_0000];
    for sc in p.syscalls().iter().flatten() {
        for a in sc.args().iter().flatten() {
            for x in [a.value(), a.value_two().unwrap_or(0)] {
                v.extend([x, x.wrapping_sub(1), x.wrapping_add(1), x | 1 << 32, !x]);
            }
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Runs both programs over every syscall number of every ABI with boundary arguments and
/// returns the differing verdicts (at most 20).
fn compare(path: &Path, expect_skipped: &[&str]) -> Vec<String> {
    let profile: LinuxSeccomp = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let ours = compile(&profile).expect("cella compiles the profile");
    let (theirs, skipped) = libseccomp_program(path);
    assert_eq!(skipped, expect_skipped, "names libseccomp skipped");
    eprintln!(
        "instructions: cella {} libseccomp {}",
        ours.len(),
        theirs.len()
    );

    let values = arg_values(&profile);
    let mut cases = Vec::new();
    for n in 0..=600u32 {
        cases.push((AUDIT_ARCH_X86_64, n));
        cases.push((AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | n));
        cases.push((AUDIT_ARCH_I386, n));
    }
    for n in [
        0x3fff_ffff,
        0x7fff_ffff,
        0x8000_0000,
        u32::MAX,
        X32_SYSCALL_BIT | 0xffff,
    ] {
        cases.extend([(AUDIT_ARCH_X86_64, n), (AUDIT_ARCH_I386, n)]);
    }
    cases.push((0xc000_00b7, 39)); // aarch64: not listed, bad arch
    cases.push((0, 0));

    let mut checked = 0usize;
    let mut mismatches = Vec::new();
    for &(arch, nr) in &cases {
        let mut argsets = vec![[0u64; 6]];
        for &v in &values {
            for i in 0..4 {
                let mut a = [0u64; 6];
                a[i] = v;
                argsets.push(a);
            }
            argsets.push([v; 6]);
        }
        for args in argsets {
            let d = SeccompData {
                nr,
                arch,
                ip: 0x5555_0000_1234,
                args,
            };
            let a = bpf::run(ours.instructions(), &d).unwrap();
            let b = bpf::run(&theirs, &d).unwrap();
            checked += 1;
            if a != b && mismatches.len() < 20 {
                mismatches.push(format!(
                    "arch {arch:#x} nr {nr:#x} args {args:x?}: cella {a:#x} libseccomp {b:#x}"
                ));
            }
        }
    }
    eprintln!("checked {checked} inputs");
    mismatches
}

#[test]
fn docker_like_profile_matches_libseccomp() {
    if !libseccomp_available() {
        return;
    }
    let m = compare(
        &data_dir().join("docker-like.json"),
        &["no_such_syscall_anywhere"],
    );
    assert!(m.is_empty(), "verdicts differ:\n{}", m.join("\n"));
}

/// A blocklist: default allow, native ABI only (x32 and i386 get the bad-arch action),
/// every operator with 64-bit values, several rules per syscall.
#[test]
fn blocklist_profile_matches_libseccomp() {
    if !libseccomp_available() {
        return;
    }
    let json = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["mount","umount2","pivot_root"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
        {"names":["ioctl"],"action":"SCMP_ACT_ERRNO","errnoRet":25,
         "args":[{"index":1,"value":21522,"op":"SCMP_CMP_EQ"}]},
        {"names":["ioctl"],"action":"SCMP_ACT_ERRNO","errnoRet":25,
         "args":[{"index":1,"value":4294967296,"op":"SCMP_CMP_GE"},{"index":2,"value":7,"op":"SCMP_CMP_LT"}]},
        {"names":["mmap"],"action":"SCMP_ACT_KILL_PROCESS",
         "args":[{"index":2,"value":4,"valueTwo":4,"op":"SCMP_CMP_MASKED_EQ"},{"index":3,"value":18446744069414584320,"op":"SCMP_CMP_GT"}]},
        {"names":["kill"],"action":"SCMP_ACT_TRAP","args":[{"index":1,"value":9,"op":"SCMP_CMP_NE"}]},
        {"names":["tgkill"],"action":"SCMP_ACT_LOG","args":[{"index":2,"value":4294967297,"op":"SCMP_CMP_LE"}]},
        {"names":["socket"],"action":"SCMP_ACT_ERRNO","errnoRet":97,
         "args":[{"index":0,"value":18446744073709551615,"valueTwo":40,"op":"SCMP_CMP_MASKED_EQ"}]},
        {"names":["ptrace"],"action":"SCMP_ACT_TRACE","errnoRet":3},
        {"names":["reboot"],"action":"SCMP_ACT_KILL"}]}"#;
    let file = TempFile(std::env::temp_dir().join(format!(
        "cella-oracle-{}-blocklist.json",
        std::process::id()
    )));
    std::fs::write(&file.0, json).unwrap();
    let m = compare(&file.0, &[]);
    assert!(m.is_empty(), "verdicts differ:\n{}", m.join("\n"));
}
