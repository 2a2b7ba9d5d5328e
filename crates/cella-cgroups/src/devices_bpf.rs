//! cgroup v2 has no devices controller: device rules become a BPF_PROG_TYPE_CGROUP_DEVICE
//! program attached to the container's cgroup.
//!
//! The program reads the request (type, access, major, minor) from `bpf_cgroup_dev_ctx`
//! and checks the OCI rules from the LAST to the first: the first rule that matches
//! decides, which is what applying the rules in order to a v1 devices cgroup gives.
//! An allow rule matches when it grants every requested access bit; a deny rule when it
//! covers any of them. No match means allow (a cgroup with no rules allows everything);
//! configs start with a deny-all rule to turn that around.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// `BPF_DEVCG_DEV_BLOCK`.
const DEV_BLOCK: i32 = 1;
/// `BPF_DEVCG_DEV_CHAR`.
const DEV_CHAR: i32 = 2;
/// `BPF_DEVCG_ACC_MKNOD | READ | WRITE`.
const ACC_ALL: i32 = 7;

// Instruction classes and operations (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61;
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_K: u8 = 0xb4;
const ALU32_MOV_X: u8 = 0xbc;
const JMP_JNE_K: u8 = 0x55;
const JMP_JEQ_K: u8 = 0x15;
const JMP_EXIT: u8 = 0x95;

/// One eBPF instruction in the kernel's 8-byte encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// The little-endian `struct bpf_insn`.
    pub(crate) fn encode(self) -> u64 {
        u64::from(self.code)
            | (u64::from(self.dst & 0xf) << 8)
            | (u64::from(self.src & 0xf) << 12)
            | (u64::from(self.off as u16) << 16)
            | (u64::from(self.imm as u32) << 32)
    }
}

fn access_mask(r: &LinuxDeviceCgroup) -> i32 {
    let a = r
        .access()
        .clone()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "rwm".into());
    let mut m = 0;
    for c in a.chars() {
        m |= match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        };
    }
    m
}

/// Compile the rules (already validated) into a program.
pub(crate) fn compile(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    // r2 = type, r3 = access, r4 = major, r5 = minor.
    let mut p = vec![
        Insn::new(LDX_MEM_W, 2, 1, 0, 0),
        Insn::new(ALU32_AND_K, 2, 0, 0, 0xffff),
        Insn::new(LDX_MEM_W, 3, 1, 0, 0),
        Insn::new(ALU32_RSH_K, 3, 0, 0, 16),
        Insn::new(LDX_MEM_W, 4, 1, 4, 0),
        Insn::new(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        // Each entry: (opcode, dst, imm) of a "skip this rule if" jump, or None for the
        // mov that isolates access bits.
        let mut checks: Vec<Insn> = Vec::new();
        match r.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::B => checks.push(Insn::new(JMP_JNE_K, 2, 0, 0, DEV_BLOCK)),
            LinuxDeviceType::C | LinuxDeviceType::U => {
                checks.push(Insn::new(JMP_JNE_K, 2, 0, 0, DEV_CHAR))
            }
            _ => {}
        }
        let mask = access_mask(r);
        if mask != ACC_ALL {
            checks.push(Insn::new(ALU32_MOV_X, 1, 3, 0, 0));
            if r.allow() {
                // Skip unless every requested bit is granted.
                checks.push(Insn::new(ALU32_AND_K, 1, 0, 0, !mask & ACC_ALL));
                checks.push(Insn::new(JMP_JNE_K, 1, 0, 0, 0));
            } else {
                // Skip unless some requested bit is denied.
                checks.push(Insn::new(ALU32_AND_K, 1, 0, 0, mask));
                checks.push(Insn::new(JMP_JEQ_K, 1, 0, 0, 0));
            }
        }
        if let Some(m) = r.major().filter(|m| *m >= 0) {
            checks.push(Insn::new(JMP_JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor().filter(|m| *m >= 0) {
            checks.push(Insn::new(JMP_JNE_K, 5, 0, 0, m as i32));
        }
        let unconditional = checks.is_empty();
        let len = checks.len() as i16 + 2;
        for (i, mut c) in checks.into_iter().enumerate() {
            if c.code == JMP_JNE_K || c.code == JMP_JEQ_K {
                // Jump past this rule's remaining checks and its mov+exit.
                c.off = len - i as i16 - 1;
            }
            p.push(c);
        }
        p.push(Insn::new(ALU32_MOV_K, 0, 0, 0, i32::from(r.allow())));
        p.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
        if unconditional {
            // Nothing after a rule that matches everything is reachable (the verifier
            // rejects unreachable code).
            return p;
        }
    }
    p.push(Insn::new(ALU32_MOV_K, 0, 0, 0, 1));
    p.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
    p
}

/// Run a program on a request, for tests: an interpreter for exactly the instructions
/// [`compile`] emits.
#[cfg(test)]
pub(crate) fn run(prog: &[Insn], dev_type: u32, access: u32, major: u32, minor: u32) -> u32 {
    let ctx = [(access << 16) | dev_type, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        let (d, s) = (i.dst as usize, i.src as usize);
        pc += 1;
        match i.code {
            LDX_MEM_W => {
                assert_eq!(s, 1, "loads only from the context");
                r[d] = u64::from(ctx[i.off as usize / 4]);
            }
            ALU32_AND_K => r[d] = u64::from((r[d] as u32) & (i.imm as u32)),
            ALU32_RSH_K => r[d] = u64::from((r[d] as u32) >> i.imm),
            ALU32_MOV_K => r[d] = u64::from(i.imm as u32),
            ALU32_MOV_X => r[d] = u64::from(r[s] as u32),
            JMP_JNE_K => {
                if r[d] != i64::from(i.imm) as u64 {
                    pc = (pc as i64 + i64::from(i.off)) as usize;
                }
            }
            JMP_JEQ_K => {
                if r[d] == i64::from(i.imm) as u64 {
                    pc = (pc as i64 + i64::from(i.off)) as usize;
                }
            }
            JMP_EXIT => return r[0] as u32,
            c => panic!("unexpected opcode {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: u32 = 2;
    const W: u32 = 4;
    const M: u32 = 1;
    const C: u32 = DEV_CHAR as u32;
    const B: u32 = DEV_BLOCK as u32;

    fn rules(json: &str) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn deny_all_then_allow_some() {
        let p = compile(&rules(
            r#"[{"allow":false,"access":"rwm"},
                {"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"},
                {"allow":true,"type":"c","major":136,"access":"rw"},
                {"allow":true,"type":"b","major":8,"minor":0,"access":"r"}]"#,
        ));
        assert_eq!(run(&p, C, R | W, 1, 3), 1, "/dev/null");
        assert_eq!(run(&p, C, M, 1, 3), 1, "mknod /dev/null");
        assert_eq!(run(&p, C, R, 1, 5), 0, "/dev/zero");
        assert_eq!(run(&p, B, R, 1, 3), 0, "block 1:3");
        assert_eq!(run(&p, C, R | W, 136, 7), 1, "pts");
        assert_eq!(run(&p, C, M, 136, 7), 0, "mknod pts");
        assert_eq!(run(&p, B, R, 8, 0), 1, "read sda");
        assert_eq!(run(&p, B, R | W, 8, 0), 0, "write sda");
    }

    #[test]
    fn later_rules_win_and_no_rules_allow() {
        assert_eq!(run(&compile(&[]), C, R, 1, 5), 1);
        let p = compile(&rules(
            r#"[{"allow":true,"type":"c","major":1,"minor":5},{"allow":false,"type":"c","major":1,"access":"w"}]"#,
        ));
        assert_eq!(run(&p, C, R, 1, 5), 1);
        assert_eq!(
            run(&p, C, R | W, 1, 5),
            0,
            "a deny covering any requested bit wins"
        );
        // A trailing allow-all makes earlier rules unreachable, so they are not emitted.
        let p = compile(&rules(
            r#"[{"allow":false,"access":"rwm"},{"allow":true,"access":"rwm"}]"#,
        ));
        assert_eq!(p.len(), 6 + 2);
        assert_eq!(run(&p, B, R, 8, 0), 1);
    }

    #[test]
    fn encoding_matches_the_kernel_layout() {
        // ldxw r2, [r1+4] and jne r4, 7, +3
        assert_eq!(
            Insn::new(LDX_MEM_W, 2, 1, 4, 0).encode(),
            0x0000_0000_0004_1261
        );
        assert_eq!(
            Insn::new(JMP_JNE_K, 4, 0, 3, 7).encode(),
            0x0000_0007_0003_0455
        );
    }
}
