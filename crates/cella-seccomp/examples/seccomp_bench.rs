//! Benchmark helper for bench/seccomp.sh.
//!
//! `seccomp_bench compile PROFILE N`  — mean time of `compile()` (and of parse + compile).
//! `seccomp_bench syscalls PROFILE none|cella|cella-nocache|BPF_FILE N` — in this process: set
//! no_new_privs, install nothing, cella's filter, or a raw BPF file (libseccomp's export),
//! then print ns per call for a plainly allowed, an argument-checked, a rule-denied and a
//! default-denied syscall.

use std::time::Instant;

use cella_seccomp::{bpf, compile};
use oci_spec::runtime::LinuxSeccomp;

fn parse(path: &str) -> LinuxSeccomp {
    serde_json::from_slice(&std::fs::read(path).expect("read profile")).expect("parse profile")
}

fn time_ns(n: u64, mut f: impl FnMut()) -> f64 {
    // Warm up caches and the kernel's seccomp allow bitmap.
    for _ in 0..1000 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// A syscall with integer arguments only (never pointers), for timing.
fn raw(nr: libc::c_long, a0: libc::c_long, a1: libc::c_long) {
    // SAFETY: the benchmarked syscalls take integers here and touch no memory of ours.
    unsafe {
        libc::syscall(nr, a0, a1, 0);
    }
}

fn load_raw(prog: &[bpf::Insn]) {
    #[repr(C)]
    struct Fprog {
        len: u16,
        filter: *const bpf::Insn,
    }
    let f = Fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr(),
    };
    // SAFETY: `f` points at a live slice laid out as `struct sock_filter`; the kernel copies it.
    let r = unsafe { libc::syscall(libc::SYS_seccomp, 1, 0, &f as *const Fprog) };
    assert_eq!(r, 0, "seccomp: {}", std::io::Error::last_os_error());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("compile") => {
            let n: u64 = args[3].parse().unwrap();
            let raw = std::fs::read(&args[2]).unwrap();
            let profile = parse(&args[2]);
            let mut len = 0;
            let c = time_ns(n, || len = compile(&profile).unwrap().len());
            let pc = time_ns(n, || {
                let p: LinuxSeccomp = serde_json::from_slice(&raw).unwrap();
                len = compile(&p).unwrap().len();
            });
            println!(
                "cella compile: {:.1} us  (parse+compile {:.1} us, {len} insns)",
                c / 1e3,
                pc / 1e3
            );
        }
        Some("syscalls") => {
            let n: u64 = args[4].parse().unwrap();
            assert_eq!(
                // SAFETY: plain prctl on this thread.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
                0
            );
            match args[3].as_str() {
                "none" => {}
                "cella" => {
                    compile(&parse(&args[2])).unwrap().install().unwrap();
                }
                // The same program behind one load of the instruction pointer: the kernel
                // can no longer prove any verdict independent of the call, so its allow
                // cache is off. Shows what the cache saves on plain allows.
                "cella-nocache" => {
                    let prog = compile(&parse(&args[2])).unwrap();
                    let mut insns = vec![bpf::Insn {
                        code: bpf::LD_W_ABS,
                        jt: 0,
                        jf: 0,
                        k: 8,
                    }];
                    insns.extend_from_slice(prog.instructions());
                    load_raw(&insns);
                }
                file => load_raw(&bpf::from_bytes(&std::fs::read(file).unwrap())),
            }
            // The first timed loop of a process runs slower (frequency, caches): discard one.
            time_ns(n, || raw(libc::SYS_getpid, 0, 0));
            let getpid = time_ns(n, || raw(libc::SYS_getpid, 0, 0));
            // personality(0xffffffff) only queries; the profile allows it by argument.
            let personality = time_ns(n, || raw(libc::SYS_personality, 0xffff_ffff, 0));
            // setns is denied by a rule (ERRNO 95); with no filter it fails with EBADF.
            let setns = time_ns(n, || raw(libc::SYS_setns, -1, 0));
            // lookup_dcookie is not listed: the default action (ENOSYS without a filter).
            let dflt = time_ns(n, || raw(libc::SYS_lookup_dcookie, 0, 0));
            println!(
                "{} {getpid:.1} {personality:.1} {setns:.1} {dflt:.1}",
                args[3]
            );
        }
        _ => {
            eprintln!(
                "usage: seccomp_bench compile PROFILE N | syscalls PROFILE none|cella|cella-nocache|BPF N"
            );
            std::process::exit(2);
        }
    }
}
