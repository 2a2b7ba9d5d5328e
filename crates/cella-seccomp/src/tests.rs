//! Compiler unit tests: profiles are compiled and run in the user-space interpreter.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction as Act, LinuxSeccompArgBuilder,
    LinuxSeccompOperator as Op, LinuxSyscall,
};

use crate::bpf::{self, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, SeccompData, X32_SYSCALL_BIT};
use crate::{SeccompError, compile, syscall_nr_i386, syscall_nr_x32, syscall_nr_x86_64};

fn rule(
    names: &[&str],
    action: Act,
    errno: Option<u32>,
    args: &[(usize, Op, u64, u64)],
) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect());
    s.set_action(action);
    s.set_errno_ret(errno);
    if !args.is_empty() {
        s.set_args(Some(
            args.iter()
                .map(|&(index, op, value, two)| {
                    LinuxSeccompArgBuilder::default()
                        .index(index)
                        .op(op)
                        .value(value)
                        .value_two(two)
                        .build()
                        .unwrap()
                })
                .collect(),
        ));
    }
    s
}

fn profile(
    default: Act,
    errno: Option<u32>,
    arches: &[Arch],
    syscalls: Vec<LinuxSyscall>,
) -> LinuxSeccomp {
    let mut p = LinuxSeccomp::default();
    p.set_default_action(default);
    p.set_default_errno_ret(errno);
    p.set_architectures(Some(arches.to_vec()));
    p.set_syscalls(Some(syscalls));
    p
}

fn eval(prog: &crate::SeccompProgram, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let d = SeccompData {
        nr,
        arch,
        ip: 0x7fff_dead_beef,
        args,
    };
    bpf::run(prog.instructions(), &d).expect("program runs")
}

fn nr(name: &str) -> u32 {
    syscall_nr_x86_64(name).unwrap()
}

const ENOSYS: u32 = bpf::RET_ERRNO | 38;

#[test]
fn plain_rules_and_default_errno() {
    let p = profile(
        Act::ScmpActErrno,
        Some(38),
        &[],
        vec![
            rule(&["getpid", "read"], Act::ScmpActAllow, None, &[]),
            rule(&["mkdir"], Act::ScmpActErrno, None, &[]),
            rule(&["no_such_syscall"], Act::ScmpActAllow, None, &[]),
            rule(&["kill"], Act::ScmpActKillProcess, None, &[]),
            rule(&["getuid"], Act::ScmpActTrace, Some(7), &[]),
        ],
    );
    let prog = compile(&p).unwrap();
    let a = [0; 6];
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, nr("getpid"), a),
        bpf::RET_ALLOW
    );
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, nr("read"), a),
        bpf::RET_ALLOW
    );
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, nr("mkdir"), a),
        bpf::RET_ERRNO | 1
    );
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, nr("kill"), a),
        bpf::RET_KILL_PROCESS
    );
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, nr("getuid"), a),
        bpf::RET_TRACE | 7
    );
    assert_eq!(eval(&prog, AUDIT_ARCH_X86_64, nr("write"), a), ENOSYS);
    for n in [0x3fff_ffff, 10_000, u32::MAX >> 3] {
        assert_eq!(eval(&prog, AUDIT_ARCH_X86_64, n, a), ENOSYS, "nr {n:#x}");
    }
    // x32 and i386 are not listed: the bad-arch action, whatever the number.
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | nr("getpid"), a),
        0
    );
    assert_eq!(eval(&prog, AUDIT_ARCH_X86_64, u32::MAX - 1, a), 0);
    // Syscall -1 gets the default action, as in libseccomp.
    assert_eq!(eval(&prog, AUDIT_ARCH_X86_64, u32::MAX, a), ENOSYS);
    assert_eq!(eval(&prog, AUDIT_ARCH_I386, 20, a), 0);
    assert_eq!(eval(&prog, 0xc000_00b7, nr("getpid"), a), 0);
}

#[test]
fn plain_verdicts_read_only_arch_and_nr() {
    let p = profile(
        Act::ScmpActErrno,
        None,
        &[Arch::ScmpArchX86, Arch::ScmpArchX32],
        vec![
            rule(
                &["getpid", "read", "write", "mmap"],
                Act::ScmpActAllow,
                None,
                &[],
            ),
            rule(
                &["personality"],
                Act::ScmpActAllow,
                None,
                &[(0, Op::ScmpCmpEq, 8, 0)],
            ),
        ],
    );
    let prog = compile(&p).unwrap();
    for arch in [AUDIT_ARCH_X86_64, AUDIT_ARCH_I386] {
        for n in 0..1024u32 {
            let n = if arch == AUDIT_ARCH_X86_64 && n >= 512 {
                X32_SYSCALL_BIT | (n - 512)
            } else {
                n
            };
            let d = SeccompData {
                nr: n,
                arch,
                ip: 1,
                args: [9; 6],
            };
            let (v, loaded) = bpf::run_traced(prog.instructions(), &d).unwrap();
            let is_personality = [
                syscall_nr_x86_64("personality"),
                syscall_nr_i386("personality"),
                syscall_nr_x32("personality"),
            ]
            .contains(&Some(n));
            if !is_personality {
                assert_eq!(
                    loaded, 0b11,
                    "nr {n:#x} arch {arch:#x} verdict {v:#x} loaded more than nr and arch"
                );
            }
        }
    }
}

/// Every operator against boundary values, compared with the same comparison in Rust.
#[test]
fn operators_on_64_bit_args() {
    let values: [u64; 7] = [
        0,
        1,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0001,
        0x8000_0000_0000_0000,
        u64::MAX,
    ];
    let ops = [
        Op::ScmpCmpNe,
        Op::ScmpCmpLt,
        Op::ScmpCmpLe,
        Op::ScmpCmpEq,
        Op::ScmpCmpGe,
        Op::ScmpCmpGt,
        Op::ScmpCmpMaskedEq,
    ];
    for op in ops {
        for &v in &values {
            let two = 0x1_0000_0000;
            let p = profile(
                Act::ScmpActAllow,
                None,
                &[Arch::ScmpArchX86],
                vec![rule(
                    &["ioctl"],
                    Act::ScmpActErrno,
                    Some(99),
                    &[(3, op, v, two)],
                )],
            );
            let prog = compile(&p).unwrap();
            let mut probes: Vec<u64> = values.to_vec();
            for &x in &values {
                probes.extend([
                    x.wrapping_add(1),
                    x.wrapping_sub(1),
                    x ^ 0xffff_ffff,
                    x ^ (0xffff_ffff << 32),
                ]);
            }
            for &a in &probes {
                let holds = match op {
                    Op::ScmpCmpNe => a != v,
                    Op::ScmpCmpLt => a < v,
                    Op::ScmpCmpLe => a <= v,
                    Op::ScmpCmpEq => a == v,
                    Op::ScmpCmpGe => a >= v,
                    Op::ScmpCmpGt => a > v,
                    Op::ScmpCmpMaskedEq => a & v == two,
                };
                let want = if holds {
                    bpf::RET_ERRNO | 99
                } else {
                    bpf::RET_ALLOW
                };
                let mut args = [0u64; 6];
                args[3] = a;
                assert_eq!(
                    eval(&prog, AUDIT_ARCH_X86_64, nr("ioctl"), args),
                    want,
                    "{op:?} arg {a:#x} value {v:#x}"
                );
                // i386 sees 32-bit arguments: only the low word counts, the high word is 0.
                let a32 = a & 0xffff_ffff;
                let holds32 = match op {
                    Op::ScmpCmpNe => a32 != v,
                    Op::ScmpCmpLt => a32 < v,
                    Op::ScmpCmpLe => a32 <= v,
                    Op::ScmpCmpEq => a32 == v,
                    Op::ScmpCmpGe => a32 >= v,
                    Op::ScmpCmpGt => a32 > v,
                    Op::ScmpCmpMaskedEq => a32 & v == two,
                };
                let want32 = if holds32 {
                    bpf::RET_ERRNO | 99
                } else {
                    bpf::RET_ALLOW
                };
                assert_eq!(
                    eval(
                        &prog,
                        AUDIT_ARCH_I386,
                        syscall_nr_i386("ioctl").unwrap(),
                        args
                    ),
                    want32,
                    "i386 {op:?} arg {a:#x} value {v:#x}"
                );
            }
        }
    }
}

#[test]
fn args_in_a_rule_are_anded_and_rules_are_ored() {
    let p = profile(
        Act::ScmpActErrno,
        None,
        &[],
        vec![
            rule(
                &["socket"],
                Act::ScmpActAllow,
                None,
                &[(0, Op::ScmpCmpEq, 1, 0), (1, Op::ScmpCmpEq, 2, 0)],
            ),
            rule(
                &["socket"],
                Act::ScmpActAllow,
                None,
                &[(0, Op::ScmpCmpEq, 10, 0)],
            ),
            rule(
                &["socket"],
                Act::ScmpActLog,
                None,
                &[(2, Op::ScmpCmpGt, 100, 0)],
            ),
        ],
    );
    let prog = compile(&p).unwrap();
    let s = nr("socket");
    let deny = bpf::RET_ERRNO | 1;
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, s, [1, 2, 0, 0, 0, 0]),
        bpf::RET_ALLOW
    );
    assert_eq!(eval(&prog, AUDIT_ARCH_X86_64, s, [1, 3, 0, 0, 0, 0]), deny);
    assert_eq!(eval(&prog, AUDIT_ARCH_X86_64, s, [2, 2, 0, 0, 0, 0]), deny);
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, s, [10, 99, 0, 0, 0, 0]),
        bpf::RET_ALLOW
    );
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, s, [3, 3, 101, 0, 0, 0]),
        bpf::RET_LOG
    );
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, s, [1 << 32 | 1, 2, 0, 0, 0, 0]),
        deny
    );
}

#[test]
fn x32_and_i386_use_their_own_numbers() {
    let p = profile(
        Act::ScmpActAllow,
        None,
        &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        vec![rule(
            &["getppid", "rt_sigaction"],
            Act::ScmpActErrno,
            Some(13),
            &[],
        )],
    );
    let prog = compile(&p).unwrap();
    let deny = bpf::RET_ERRNO | 13;
    let a = [0; 6];
    assert_eq!(eval(&prog, AUDIT_ARCH_X86_64, nr("getppid"), a), deny);
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | nr("getppid"), a),
        deny
    );
    // rt_sigaction is 13 on x86_64 but 512 on x32; x32's 13 is not a syscall.
    assert_eq!(eval(&prog, AUDIT_ARCH_X86_64, 13, a), deny);
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 512, a),
        deny
    );
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 13, a),
        bpf::RET_ALLOW
    );
    assert_eq!(
        eval(
            &prog,
            AUDIT_ARCH_I386,
            syscall_nr_i386("getppid").unwrap(),
            a
        ),
        deny
    );
    assert_eq!(
        eval(&prog, AUDIT_ARCH_I386, nr("getppid"), a),
        bpf::RET_ALLOW
    );
}

#[test]
fn i386_socket_rules_cover_socketcall() {
    let p = profile(
        Act::ScmpActAllow,
        None,
        &[Arch::ScmpArchX86],
        vec![rule(
            &["socket"],
            Act::ScmpActErrno,
            Some(97),
            &[(0, Op::ScmpCmpEq, 16, 0)],
        )],
    );
    let prog = compile(&p).unwrap();
    let deny = bpf::RET_ERRNO | 97;
    assert_eq!(eval(&prog, AUDIT_ARCH_I386, 359, [16, 0, 0, 0, 0, 0]), deny);
    assert_eq!(
        eval(&prog, AUDIT_ARCH_I386, 359, [2, 0, 0, 0, 0, 0]),
        bpf::RET_ALLOW
    );
    // socketcall(SYS_SOCKET, argp): the arguments are in memory, so the sub-call decides.
    assert_eq!(eval(&prog, AUDIT_ARCH_I386, 102, [1, 0, 0, 0, 0, 0]), deny);
    assert_eq!(
        eval(&prog, AUDIT_ARCH_I386, 102, [2, 0, 0, 0, 0, 0]),
        bpf::RET_ALLOW
    );
}

#[test]
fn errors_name_the_field() {
    let p = profile(
        Act::ScmpActErrno,
        None,
        &[],
        vec![
            rule(&["read"], Act::ScmpActAllow, None, &[]),
            rule(&["write"], Act::ScmpActAllow, None, &[]),
            rule(&["close"], Act::ScmpActAllow, None, &[]),
            rule(
                &["ioctl"],
                Act::ScmpActAllow,
                None,
                &[(6, Op::ScmpCmpEq, 1, 0)],
            ),
        ],
    );
    let e = compile(&p).unwrap_err();
    assert_eq!(
        e.to_string(),
        "linux.seccomp.syscalls[3].args[0].index: 6 is above 5"
    );

    let p = profile(
        Act::ScmpActErrno,
        None,
        &[],
        vec![rule(&["read"], Act::ScmpActErrno, Some(70000), &[])],
    );
    assert_eq!(
        compile(&p).unwrap_err().to_string(),
        "linux.seccomp.syscalls[0].errnoRet: 70000 is above 65535 (SECCOMP_RET_DATA is 16 bits)"
    );
    let p = profile(Act::ScmpActNotify, None, &[], vec![]);
    assert!(
        matches!(compile(&p), Err(SeccompError::Invalid { ref path, .. }) if path == "linux.seccomp.defaultAction")
    );
    let p = profile(
        Act::ScmpActErrno,
        None,
        &[],
        vec![rule(&["read"], Act::ScmpActNotify, None, &[])],
    );
    assert_eq!(
        compile(&p).unwrap_err().to_string(),
        "linux.seccomp.listenerPath: required when a rule uses SCMP_ACT_NOTIFY"
    );
    // Unknown actions, architectures and operators are refused when config.json is parsed.
    let bad = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_FOO"}]}"#;
    assert!(serde_json::from_str::<LinuxSeccomp>(bad).is_err());
}

/// Enough arg-checked syscalls that tree jumps exceed 255 instructions and need `ja`.
#[test]
fn long_jumps_in_big_profiles() {
    let names: Vec<&str> = x86_64_names().into_iter().take(200).collect();
    let syscalls = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            rule(
                &[n],
                Act::ScmpActAllow,
                None,
                &[(i % 6, Op::ScmpCmpEq, i as u64, 0)],
            )
        })
        .collect();
    let p = profile(Act::ScmpActErrno, Some(38), &[Arch::ScmpArchX86], syscalls);
    let prog = compile(&p).unwrap();
    assert!(prog.len() > 1000, "{}", prog.len());
    assert!(
        prog.instructions()
            .iter()
            .any(|i| i.code == bpf::JMP_JA && i.k > 255)
    );
    for (i, n) in names.iter().enumerate() {
        let mut args = [0u64; 6];
        args[i % 6] = i as u64;
        assert_eq!(
            eval(&prog, AUDIT_ARCH_X86_64, nr(n), args),
            bpf::RET_ALLOW,
            "{n}"
        );
        args[i % 6] = i as u64 + 1;
        assert_eq!(eval(&prog, AUDIT_ARCH_X86_64, nr(n), args), ENOSYS, "{n}");
    }
}

#[test]
fn too_long_is_an_error() {
    let names: Vec<&str> = crate::tables::SYSCALLS
        .iter()
        .filter(|r| r.1 != crate::tables::NONE)
        .map(|r| r.0)
        .collect();
    let syscalls = names
        .iter()
        .map(|n| {
            rule(
                &[n],
                Act::ScmpActAllow,
                None,
                &[(0, Op::ScmpCmpLt, 5, 0), (1, Op::ScmpCmpGe, 5, 0)],
            )
        })
        .collect();
    let p = profile(Act::ScmpActErrno, None, &[], syscalls);
    match compile(&p) {
        Err(SeccompError::TooLong { len }) => assert!(len > 4096),
        other => panic!("expected TooLong, got {other:?}"),
    }
}

fn x86_64_names() -> Vec<&'static str> {
    crate::tables::SYSCALLS
        .iter()
        .filter(|r| r.1 != crate::tables::NONE)
        .map(|r| r.0)
        .collect()
}

#[test]
fn raw_json_check_names_unknown_values() {
    let cases = [
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["a"],"action":"SCMP_ACT_ALLOW"},{"names":["b"],"action":"SCMP_ACT_FOO"}]}"#,
            r#"linux.seccomp.syscalls[1].action: unknown action "SCMP_ACT_FOO""#,
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_NOPE"}"#,
            r#"linux.seccomp.defaultAction: unknown action "SCMP_ACT_NOPE""#,
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_Z80"]}"#,
            r#"linux.seccomp.architectures[1]: unknown architecture "SCMP_ARCH_Z80""#,
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["a"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":1,"value":1,"op":"SCMP_CMP_ABOUT"}]}]}"#,
            r#"linux.seccomp.syscalls[0].args[1].op: unknown operator "SCMP_CMP_ABOUT""#,
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["a"],"action":"SCMP_ACT_ALLOW","args":[{"index":7,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
            "linux.seccomp.syscalls[0].args[0].index: 7 is above 5",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","flags":["SECCOMP_FILTER_FLAG_FAST"]}"#,
            r#"linux.seccomp.flags[0]: unknown flag "SECCOMP_FILTER_FLAG_FAST""#,
        ),
    ];
    for (json, want) in cases {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(crate::check_json(&v).unwrap_err().to_string(), want);
    }
    let good: serde_json::Value =
        serde_json::from_slice(include_bytes!("../tests/data/docker-like.json")).unwrap();
    crate::check_json(&good).unwrap();
}

#[test]
fn an_unconditional_rule_wins_over_conditional_ones_as_in_libseccomp() {
    let p = profile(
        Act::ScmpActErrno,
        None,
        &[],
        vec![
            rule(
                &["getpgid"],
                Act::ScmpActErrno,
                Some(5),
                &[(0, Op::ScmpCmpEq, 5, 0)],
            ),
            rule(&["getpgid"], Act::ScmpActAllow, None, &[]),
        ],
    );
    let prog = compile(&p).unwrap();
    let args = [5, 0, 0, 0, 0, 0];
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, nr("getpgid"), args),
        bpf::RET_ALLOW
    );
}

/// Tiny deterministic PRNG (xorshift64*), so the randomized test needs no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A condition (index, op, value, valueTwo).
type SpecCond = (usize, Op, u64, u64);
/// A rule as the reference evaluator sees it: names, kernel action, conditions.
type SpecRule<'a> = (Vec<&'a str>, u32, Vec<SpecCond>);

/// The documented semantics, evaluated directly: unconditional rule wins, else the first
/// conditional rule whose conditions all hold, else the default; rules equal to the
/// default are ignored. `wide` is false for i386 (32-bit arguments).
fn reference(rules: &[SpecRule], default: u32, name: &str, args: [u64; 6], wide: bool) -> u32 {
    let holds = |&(i, op, v, two): &SpecCond| {
        let a = if wide { args[i] } else { args[i] & 0xffff_ffff };
        match op {
            Op::ScmpCmpNe => a != v,
            Op::ScmpCmpLt => a < v,
            Op::ScmpCmpLe => a <= v,
            Op::ScmpCmpEq => a == v,
            Op::ScmpCmpGe => a >= v,
            Op::ScmpCmpGt => a > v,
            Op::ScmpCmpMaskedEq => a & v == two,
        }
    };
    let mine = || {
        rules
            .iter()
            .filter(move |(names, action, _)| *action != default && names.contains(&name))
    };
    if let Some((_, a, _)) = mine().find(|(_, _, c)| c.is_empty()) {
        return *a;
    }
    mine()
        .find(|(_, _, c)| c.iter().all(holds))
        .map_or(default, |(_, a, _)| *a)
}

#[test]
fn random_profiles_follow_the_documented_semantics() {
    let pool: Vec<&str> = crate::tables::SYSCALLS
        .iter()
        .filter(|r| r.1 != crate::tables::NONE && r.2 != crate::tables::NONE && r.4 == 0)
        .map(|r| r.0)
        .step_by(7)
        .take(40)
        .collect();
    let values = [
        0u64,
        1,
        2,
        7,
        0xffff_ffff,
        1 << 32,
        (1 << 32) + 1,
        u64::MAX,
        0x8000_0000,
    ];
    let ops = [
        Op::ScmpCmpNe,
        Op::ScmpCmpLt,
        Op::ScmpCmpLe,
        Op::ScmpCmpEq,
        Op::ScmpCmpGe,
        Op::ScmpCmpGt,
        Op::ScmpCmpMaskedEq,
    ];
    let acts = [
        (Act::ScmpActAllow, None),
        (Act::ScmpActErrno, Some(3)),
        (Act::ScmpActErrno, Some(1)),
        (Act::ScmpActLog, None),
        (Act::ScmpActTrap, None),
        (Act::ScmpActKillProcess, None),
        (Act::ScmpActTrace, Some(9)),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut compiled = 0;
    for round in 0..60 {
        let (dact, derr) = acts[rng.below(3)];
        let default = dact.as_u32(derr);
        let nrules = 5 + rng.below(if round % 10 == 0 { 400 } else { 60 });
        let mut spec = Vec::new();
        let mut syscalls = Vec::new();
        for _ in 0..nrules {
            let names: Vec<&str> = (0..1 + rng.below(3))
                .map(|_| pool[rng.below(pool.len())])
                .collect();
            let (act, err) = acts[rng.below(acts.len())];
            let nconds = if rng.below(7) == 0 {
                0
            } else {
                1 + rng.below(3)
            };
            let conds: Vec<SpecCond> = (0..nconds)
                .map(|_| {
                    let v = values[rng.below(values.len())];
                    (
                        rng.below(6),
                        ops[rng.below(ops.len())],
                        v,
                        values[rng.below(values.len())] & v,
                    )
                })
                .collect();
            syscalls.push(rule(&names, act, err, &conds));
            spec.push((names, act.as_u32(err), conds));
        }
        let p = profile(dact, derr, &[Arch::ScmpArchX86], syscalls);
        let prog = match compile(&p) {
            Ok(p) => p,
            Err(SeccompError::TooLong { .. }) => continue,
            Err(e) => panic!("round {round}: {e}"),
        };
        compiled += 1;
        for name in &pool {
            for _ in 0..40 {
                let mut args = [0u64; 6];
                for a in &mut args {
                    let v = values[rng.below(values.len())];
                    *a = match rng.below(3) {
                        0 => v,
                        1 => v.wrapping_add(1),
                        _ => v.wrapping_sub(1),
                    };
                }
                let want = reference(&spec, default, name, args, true);
                let got = eval(&prog, AUDIT_ARCH_X86_64, nr(name), args);
                assert_eq!(got, want, "round {round} x86_64 {name} {args:x?}");
                let want = reference(&spec, default, name, args, false);
                let got = eval(&prog, AUDIT_ARCH_I386, syscall_nr_i386(name).unwrap(), args);
                assert_eq!(got, want, "round {round} i386 {name} {args:x?}");
            }
        }
    }
    assert!(
        compiled >= 50,
        "only {compiled} random profiles fit in 4096 instructions"
    );
}

#[test]
fn filter_flags_follow_the_profile_and_the_kernel() {
    use oci_spec::runtime::LinuxSeccompFilterFlag as F;
    let mut p = profile(
        Act::ScmpActAllow,
        None,
        &[],
        vec![rule(&["getppid"], Act::ScmpActErrno, None, &[])],
    );
    p.set_flags(Some(vec![
        F::SeccompFilterFlagLog,
        F::SeccompFilterFlagSpecAllow,
        F::SeccompFilterFlagTsync,
        F::SeccompFilterFlagWaitKillableRecv,
    ]));
    let prog = compile(&p).unwrap();
    // LOG | SPEC_ALLOW; TSYNC ignored; WAIT_KILLABLE_RECV only with a listener.
    assert_eq!(prog.flags(), (1 << 1) | (1 << 2));
    assert!(!prog.needs_notify());

    p.set_syscalls(Some(vec![rule(
        &["getppid"],
        Act::ScmpActNotify,
        None,
        &[],
    )]));
    p.set_listener_path(Some("/run/agent.sock".into()));
    let prog = compile(&p).unwrap();
    // ... | NEW_LISTENER | WAIT_KILLABLE_RECV
    assert_eq!(prog.flags(), (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5));
    assert!(prog.needs_notify());
}
