//! OCI `linux.seccomp` -> classic BPF.
//!
//! Shape of the emitted program (x86_64 kernels see only two `seccomp_data.arch` values):
//!
//! ```text
//!   ld arch
//!   jeq AUDIT_ARCH_X86_64 ? : not64
//!   ld nr ; balanced tree over [0, 2^32): x86_64 numbers below 0x40000000,
//!           x32 numbers (x32 bit set) above it, or the bad-arch action there
//!           (syscall -1 excepted: default action, as libseccomp)
//! not64:
//!   jeq AUDIT_ARCH_I386 ? : bad          (only when SCMP_ARCH_X86 is listed)
//!   ld nr ; balanced tree for i386
//! bad:
//!   ret KILL_THREAD                      (libseccomp's default bad-arch action)
//! ```
//!
//! Each tree node is one `jge K` on the syscall number; each leaf is a `ret` (a run of
//! numbers with the same plain action, or a syscall with an unconditional rule, which wins
//! as in libseccomp) or, for a syscall with only conditional rules, those rules in profile
//! order (first match wins) followed by `ret default`. Plain leaves never
//! read arguments or the instruction pointer, so the kernel's allow cache (Linux 5.11+)
//! still covers every plainly allowed syscall.

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction as Act, LinuxSeccompOperator as Op};

use crate::bpf::{self, Insn};
use crate::{Abi, SeccompError};

/// One argument condition, already validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cond {
    index: u8,
    op: Op,
    value: u64,
    value_two: u64,
}

/// One rule for one syscall: all conditions must hold (AND).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    conds: Vec<Cond>,
    action: u32,
}

/// The checked profile, ready for code generation.
pub(crate) struct Plan {
    pub(crate) default: u32,
    pub(crate) i386: bool,
    pub(crate) x32: bool,
    pub(crate) notify: bool,
    /// Actions the profile uses, to probe the kernel for.
    pub(crate) actions: Vec<(String, u32)>,
    rules: Vec<Rule>,
    /// (ABI, syscall number, index into `rules`), sorted by ABI and number, each
    /// syscall's rules in profile order.
    entries: Vec<(Abi, u32, usize)>,
}

/// Returns the kernel action for an OCI action, with `errnoRet` where it applies.
fn action_value(
    act: Act,
    errno_ret: Option<u32>,
    errno_path: impl FnOnce() -> String,
) -> Result<u32, SeccompError> {
    // runc and crun default the errno (and the tracer's data) to EPERM.
    let data = errno_ret.unwrap_or(libc::EPERM as u32);
    let with_data = |base: u32| {
        if data > 0xffff {
            Err(SeccompError::Invalid {
                path: errno_path(),
                reason: format!("{data} is above 65535 (SECCOMP_RET_DATA is 16 bits)"),
            })
        } else {
            Ok(base | data)
        }
    };
    Ok(match act {
        Act::ScmpActKill | Act::ScmpActKillThread => bpf::RET_KILL_THREAD,
        Act::ScmpActKillProcess => bpf::RET_KILL_PROCESS,
        Act::ScmpActTrap => bpf::RET_TRAP,
        Act::ScmpActErrno => with_data(bpf::RET_ERRNO)?,
        Act::ScmpActTrace => with_data(bpf::RET_TRACE)?,
        Act::ScmpActNotify => bpf::RET_USER_NOTIF,
        Act::ScmpActLog => bpf::RET_LOG,
        Act::ScmpActAllow => bpf::RET_ALLOW,
    })
}

/// Validates the profile and resolves names into per-ABI rules.
pub(crate) fn plan(cfg: &LinuxSeccomp) -> Result<Plan, SeccompError> {
    use oci_spec::runtime::Arch;

    if cfg.default_action() == Act::ScmpActNotify {
        // As runc: the init itself would block on its own notifications before execve.
        return Err(SeccompError::Invalid {
            path: "linux.seccomp.defaultAction".into(),
            reason: "SCMP_ACT_NOTIFY cannot be the default action".into(),
        });
    }
    let default = action_value(cfg.default_action(), cfg.default_errno_ret(), || {
        "linux.seccomp.defaultErrnoRet".into()
    })?;
    let mut actions = vec![(
        "linux.seccomp.defaultAction".to_string(),
        default & 0xffff_0000,
    )];

    // The native ABI is always filtered (as libseccomp does). Other architectures of the
    // OCI list cannot reach an x86_64 kernel's seccomp at all, so they add nothing.
    let (mut i386, mut x32) = (false, false);
    for arch in cfg.architectures().iter().flatten() {
        match arch {
            Arch::ScmpArchX86 => i386 = true,
            Arch::ScmpArchX32 => x32 = true,
            _ => {}
        }
    }
    let mut abis = vec![Abi::X86_64];
    if i386 {
        abis.push(Abi::I386);
    }
    if x32 {
        abis.push(Abi::X32);
    }

    let mut rules: Vec<Rule> = Vec::new();
    let mut entries: Vec<(Abi, u32, usize)> = Vec::new();
    let mut notify = false;
    for (i, sc) in cfg.syscalls().iter().flatten().enumerate() {
        let action = action_value(sc.action(), sc.errno_ret(), || {
            format!("linux.seccomp.syscalls[{i}].errnoRet")
        })?;
        let mut conds = Vec::new();
        for (j, arg) in sc.args().iter().flatten().enumerate() {
            if arg.index() > 5 {
                return Err(SeccompError::Invalid {
                    path: format!("linux.seccomp.syscalls[{i}].args[{j}].index"),
                    reason: format!("{} is above 5", arg.index()),
                });
            }
            conds.push(Cond {
                index: arg.index() as u8,
                op: arg.op(),
                value: arg.value(),
                value_two: arg.value_two().unwrap_or(0),
            });
        }
        // runc skips rules whose action is the default: they change nothing.
        if action == default {
            continue;
        }
        actions.push((
            format!("linux.seccomp.syscalls[{i}].action"),
            action & 0xffff_0000,
        ));
        notify |= action == bpf::RET_USER_NOTIF;
        let rule = rules.len();
        rules.push(Rule { conds, action });
        for name in sc.names() {
            // Names no x86 ABI knows are skipped, as runc and crun skip the names
            // libseccomp cannot resolve: one profile serves many kernels and arches.
            let Some(row) = crate::syscall_row(name) else {
                continue;
            };
            for &abi in &abis {
                if let Some(nr) = abi.nr(row) {
                    entries.push((abi, nr, rule));
                }
            }
            // i386 socket and SysV IPC calls also go through socketcall(2) / ipc(2):
            // as libseccomp, add a rule on the multiplexer matching only the sub-call
            // (the real arguments are in user memory, out of the filter's reach).
            if i386 && row.4 != 0 {
                entries.push((Abi::I386, row.4 >> 8, rules.len()));
                rules.push(Rule {
                    conds: vec![Cond {
                        index: 0,
                        op: Op::ScmpCmpEq,
                        value: u64::from(row.4 & 0xff),
                        value_two: 0,
                    }],
                    action,
                });
            }
        }
    }
    // Stable: each syscall keeps its rules in profile order (first match wins).
    entries.sort_by_key(|&(abi, nr, _)| (abi, nr));
    if notify && cfg.listener_path().is_none() {
        // As runc: without a listener nobody could ever answer the notifications.
        return Err(SeccompError::Invalid {
            path: "linux.seccomp.listenerPath".into(),
            reason: "required when a rule uses SCMP_ACT_NOTIFY".into(),
        });
    }
    Ok(Plan {
        default,
        i386,
        x32,
        notify,
        actions,
        rules,
        entries,
    })
}

/// What a range of syscall numbers leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Leaf {
    Ret(u32),
    /// Rules in profile order; `args64` tells whether arguments are 64-bit wide.
    Rules {
        rules: Vec<Rule>,
        args64: bool,
    },
}

/// Numbers `start..` (up to the next segment's start) lead to `leaf`.
#[derive(Debug)]
struct Seg {
    start: u32,
    leaf: Leaf,
}

/// Turns a syscall's rules (in profile order) into its leaf.
///
/// As in libseccomp, an unconditional rule decides the syscall whatever conditional
/// rules say, wherever it stands in the profile; conditional rules are tried in profile
/// order and the first whose conditions all hold decides.
fn leaf_of<'a>(rules: impl Iterator<Item = &'a Rule> + Clone, args64: bool) -> Leaf {
    if let Some(r) = rules.clone().find(|r| r.conds.is_empty()) {
        return Leaf::Ret(r.action);
    }
    Leaf::Rules {
        rules: rules.cloned().collect(),
        args64,
    }
}

/// Segments covering `lo..=hi` for one ABI.
fn segments(plan: &Plan, abi: Abi, lo: u32, hi: u32, out: &mut Vec<Seg>) {
    let e = &plan.entries;
    let mut i = e.partition_point(|&(a, nr, _)| (a, nr) < (abi, lo));
    let mut next = Some(lo);
    while i < e.len() && e[i].0 == abi && e[i].1 <= hi {
        let nr = e[i].1;
        let end = i + e[i..].partition_point(|&(a, n, _)| (a, n) == (abi, nr));
        if let Some(n) = next
            && n < nr
        {
            out.push(Seg {
                start: n,
                leaf: Leaf::Ret(plan.default),
            });
        }
        out.push(Seg {
            start: nr,
            leaf: leaf_of(
                e[i..end].iter().map(|&(_, _, r)| &plan.rules[r]),
                abi == Abi::X86_64,
            ),
        });
        next = nr.checked_add(1).filter(|n| *n <= hi);
        i = end;
    }
    if let Some(n) = next {
        out.push(Seg {
            start: n,
            leaf: Leaf::Ret(plan.default),
        });
    }
}

/// Merges neighbouring segments that return the same action.
fn merge(segs: Vec<Seg>) -> Vec<Seg> {
    let mut out: Vec<Seg> = Vec::with_capacity(segs.len());
    for s in segs {
        if let (Some(last), Leaf::Ret(a)) = (out.last(), &s.leaf)
            && last.leaf == Leaf::Ret(*a)
        {
            continue;
        }
        out.push(s);
    }
    out
}

/// A jump target: the next instruction or a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Next,
    L(usize),
}

/// Program text with symbolic jumps, before offsets are known.
#[derive(Clone, Debug)]
enum Item {
    /// Any non-jump instruction.
    Plain(u16, u32),
    /// A conditional jump.
    Cond {
        code: u16,
        k: u32,
        jt: Target,
        jf: Target,
    },
    /// An unconditional jump (32-bit offset).
    Ja(usize),
    /// Marks the position of a label.
    Label(usize),
}

#[derive(Default)]
struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn place(&mut self, l: usize) {
        self.items.push(Item::Label(l));
    }
    fn plain(&mut self, code: u16, k: u32) {
        self.items.push(Item::Plain(code, k));
    }
    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.items.push(Item::Cond { code, k, jt, jf });
    }
    fn ret(&mut self, k: u32) {
        self.plain(bpf::RET_K, k);
    }

    /// Resolves labels into offsets; conditional jumps farther than 255 go through an
    /// unconditional `ja` trampoline placed right after them.
    fn finish(mut self) -> Vec<Insn> {
        loop {
            let pos = self.positions();
            let mut fixed = Vec::with_capacity(self.items.len());
            let mut changed = false;
            // `pc` counts instructions in the old text, where `pos` was measured.
            let mut pc = 0usize;
            for item in std::mem::take(&mut self.items) {
                match item {
                    Item::Cond { code, k, jt, jf } => {
                        let far = |t: Target| match t {
                            Target::L(l) => pos[l] - (pc + 1) > 255,
                            Target::Next => false,
                        };
                        let (ft, ff) = (far(jt), far(jf));
                        pc += 1;
                        if !ft && !ff {
                            fixed.push(Item::Cond { code, k, jt, jf });
                            continue;
                        }
                        changed = true;
                        let mut tramps = Vec::new();
                        // Fall-through now lands on a trampoline: name the old next
                        // instruction with a label placed after the trampolines.
                        let after = self.labels;
                        self.labels += 1;
                        let mut via = |t: Target, is_far: bool, labels: &mut usize| {
                            let Target::L(dest) = t else {
                                return Target::L(after);
                            };
                            if !is_far {
                                return t;
                            }
                            let l = *labels;
                            *labels += 1;
                            tramps.push(Item::Label(l));
                            tramps.push(Item::Ja(dest));
                            Target::L(l)
                        };
                        let jt = via(jt, ft, &mut self.labels);
                        let jf = via(jf, ff, &mut self.labels);
                        fixed.push(Item::Cond { code, k, jt, jf });
                        fixed.extend(tramps);
                        fixed.push(Item::Label(after));
                    }
                    Item::Label(_) => fixed.push(item),
                    _ => {
                        pc += 1;
                        fixed.push(item);
                    }
                }
            }
            self.items = fixed;
            if !changed {
                break;
            }
        }
        let pos = self.positions();
        let mut out = Vec::with_capacity(self.items.len());
        for item in &self.items {
            let pc = out.len();
            let off = |t: Target| match t {
                Target::Next => 0,
                Target::L(l) => pos[l] - (pc + 1),
            };
            match *item {
                Item::Plain(code, k) => out.push(Insn {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Item::Cond { code, k, jt, jf } => out.push(Insn {
                    code,
                    jt: off(jt) as u8,
                    jf: off(jf) as u8,
                    k,
                }),
                Item::Ja(l) => out.push(Insn {
                    code: bpf::JMP_JA,
                    jt: 0,
                    jf: 0,
                    k: (pos[l] - (pc + 1)) as u32,
                }),
                Item::Label(_) => {}
            }
        }
        out
    }

    /// Instruction index of every label.
    fn positions(&self) -> Vec<usize> {
        let mut pos = vec![usize::MAX; self.labels];
        let mut pc = 0;
        for item in &self.items {
            match item {
                Item::Label(l) => pos[*l] = pc,
                _ => pc += 1,
            }
        }
        pos
    }

    /// Binary search over `segs` on the syscall number held in A.
    fn tree(&mut self, segs: &[Seg], default: u32) {
        if let [only] = segs {
            self.leaf(&only.leaf, default);
            return;
        }
        let mid = segs.len() / 2;
        let right = self.label();
        self.jump(
            bpf::JMP_JGE_K,
            segs[mid].start,
            Target::L(right),
            Target::Next,
        );
        self.tree(&segs[..mid], default);
        self.place(right);
        self.tree(&segs[mid..], default);
    }

    fn leaf(&mut self, leaf: &Leaf, default: u32) {
        match leaf {
            Leaf::Ret(a) => self.ret(*a),
            Leaf::Rules { rules, args64 } => {
                for rule in rules {
                    let next = self.label();
                    for c in &rule.conds {
                        self.cond(c, *args64, next);
                    }
                    self.ret(rule.action);
                    self.place(next);
                }
                self.ret(default);
            }
        }
    }

    /// Falls through when `c` holds, jumps to `fail` otherwise.
    ///
    /// 64-bit arguments are compared as unsigned numbers, high word first. For 32-bit
    /// ABIs (i386, x32) only the low word is read, as libseccomp does, because the kernel
    /// hands those syscalls 32-bit values; the high word then counts as zero.
    fn cond(&mut self, c: &Cond, args64: bool, fail: usize) {
        let pass = self.label();
        let (p, f) = (Target::L(pass), Target::L(fail));
        let lo_off = 16 + 8 * u32::from(c.index);
        let (mask, datum) = match c.op {
            Op::ScmpCmpMaskedEq => (c.value, c.value_two),
            _ => (u64::MAX, c.value),
        };
        let (mh, dh) = ((mask >> 32) as u32, (datum >> 32) as u32);
        let (ml, dl) = (mask as u32, datum as u32);
        if args64 {
            self.plain(bpf::LD_W_ABS, lo_off + 4);
            if c.op == Op::ScmpCmpMaskedEq {
                self.plain(bpf::ALU_AND_K, mh);
            }
            match c.op {
                Op::ScmpCmpEq | Op::ScmpCmpMaskedEq => {
                    self.jump(bpf::JMP_JEQ_K, dh, Target::Next, f)
                }
                Op::ScmpCmpNe => self.jump(bpf::JMP_JEQ_K, dh, Target::Next, p),
                Op::ScmpCmpGt | Op::ScmpCmpGe => {
                    self.jump(bpf::JMP_JGT_K, dh, p, Target::Next);
                    self.jump(bpf::JMP_JEQ_K, dh, Target::Next, f);
                }
                Op::ScmpCmpLt | Op::ScmpCmpLe => {
                    self.jump(bpf::JMP_JGT_K, dh, f, Target::Next);
                    self.jump(bpf::JMP_JEQ_K, dh, Target::Next, p);
                }
            }
        } else if dh != 0 {
            // The high word is zero: the outcome is known without looking at the low one.
            let holds = match c.op {
                Op::ScmpCmpEq | Op::ScmpCmpGt | Op::ScmpCmpGe => false,
                Op::ScmpCmpMaskedEq => false, // 0 & mh is 0, never dh
                Op::ScmpCmpNe | Op::ScmpCmpLt | Op::ScmpCmpLe => true,
            };
            if !holds {
                self.items.push(Item::Ja(fail));
            }
            self.place(pass);
            return;
        }
        self.plain(bpf::LD_W_ABS, lo_off);
        if c.op == Op::ScmpCmpMaskedEq {
            self.plain(bpf::ALU_AND_K, ml);
        }
        match c.op {
            Op::ScmpCmpEq | Op::ScmpCmpMaskedEq => self.jump(bpf::JMP_JEQ_K, dl, p, f),
            Op::ScmpCmpNe => self.jump(bpf::JMP_JEQ_K, dl, f, p),
            Op::ScmpCmpGt => self.jump(bpf::JMP_JGT_K, dl, p, f),
            Op::ScmpCmpGe => self.jump(bpf::JMP_JGE_K, dl, p, f),
            Op::ScmpCmpLt => self.jump(bpf::JMP_JGE_K, dl, f, p),
            Op::ScmpCmpLe => self.jump(bpf::JMP_JGT_K, dl, f, p),
        }
        self.place(pass);
    }
}

/// Emits the whole program for a checked plan.
pub(crate) fn generate(plan: &Plan) -> Vec<Insn> {
    let mut asm = Asm::default();
    let not64 = asm.label();
    asm.plain(bpf::LD_W_ABS, 4);
    asm.jump(
        bpf::JMP_JEQ_K,
        bpf::AUDIT_ARCH_X86_64,
        Target::Next,
        Target::L(not64),
    );
    asm.plain(bpf::LD_W_ABS, 0);
    let mut segs = Vec::new();
    segments(plan, Abi::X86_64, 0, bpf::X32_SYSCALL_BIT - 1, &mut segs);
    if plan.x32 {
        segments(plan, Abi::X32, bpf::X32_SYSCALL_BIT, u32::MAX, &mut segs);
    } else {
        // An x32 syscall must never reach an x86_64 rule: without SCMP_ARCH_X32 the
        // whole x32 range gets the bad-arch action, as in libseccomp.
        segs.push(Seg {
            start: bpf::X32_SYSCALL_BIT,
            leaf: Leaf::Ret(bpf::RET_KILL_THREAD),
        });
        // Except syscall -1 (what a tracer leaves when it skips a syscall; the kernel
        // answers ENOSYS): libseccomp gives it the default action, and so do we.
        segs.push(Seg {
            start: u32::MAX,
            leaf: Leaf::Ret(plan.default),
        });
    }
    asm.tree(&merge(segs), plan.default);
    asm.place(not64);
    if plan.i386 {
        let bad = asm.label();
        asm.jump(
            bpf::JMP_JEQ_K,
            bpf::AUDIT_ARCH_I386,
            Target::Next,
            Target::L(bad),
        );
        asm.plain(bpf::LD_W_ABS, 0);
        let mut segs = Vec::new();
        segments(plan, Abi::I386, 0, u32::MAX, &mut segs);
        asm.tree(&merge(segs), plan.default);
        asm.place(bad);
    }
    asm.ret(bpf::RET_KILL_THREAD);
    asm.finish()
}
