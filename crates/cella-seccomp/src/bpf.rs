//! Classic BPF as the seccomp filter speaks it: the instruction format, the opcodes
//! cella emits, and a small user-space interpreter.
//!
//! The interpreter exists so filters (cella's and libseccomp's) can be run and compared
//! over every syscall number without the kernel, and so the compiler is unit-tested.

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Insn {
    /// Opcode: class | size/op | source.
    pub code: u16,
    /// Forward offset taken when a conditional jump is true.
    pub jt: u8,
    /// Forward offset taken when a conditional jump is false.
    pub jf: u8,
    /// Immediate operand.
    pub k: u32,
}

/// `BPF_LD | BPF_W | BPF_ABS`: A = 32-bit word at offset k of `seccomp_data`.
pub const LD_W_ABS: u16 = 0x20;
/// `BPF_ALU | BPF_AND | BPF_K`: A &= k.
pub const ALU_AND_K: u16 = 0x54;
/// `BPF_JMP | BPF_JA`: pc += k (32-bit offset: the long jump).
pub const JMP_JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
pub const JMP_JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGT | BPF_K`.
pub const JMP_JGT_K: u16 = 0x25;
/// `BPF_JMP | BPF_JGE | BPF_K`.
pub const JMP_JGE_K: u16 = 0x35;
/// `BPF_JMP | BPF_JSET | BPF_K`.
pub const JMP_JSET_K: u16 = 0x45;
/// `BPF_RET | BPF_K`: return k.
pub const RET_K: u16 = 0x06;

/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

/// `AUDIT_ARCH_X86_64`: `seccomp_data.arch` of a 64-bit or x32 syscall.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_I386`: `seccomp_data.arch` of an i386 syscall (`int 0x80`, 32-bit process).
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// `__X32_SYSCALL_BIT`: set in the syscall number of every x32 syscall.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `SECCOMP_RET_KILL_PROCESS`.
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `SECCOMP_RET_KILL_THREAD` (`SCMP_ACT_KILL`).
pub const RET_KILL_THREAD: u32 = 0x0000_0000;
/// `SECCOMP_RET_TRAP`.
pub const RET_TRAP: u32 = 0x0003_0000;
/// `SECCOMP_RET_ERRNO` (low 16 bits: the errno).
pub const RET_ERRNO: u32 = 0x0005_0000;
/// `SECCOMP_RET_USER_NOTIF`.
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// `SECCOMP_RET_TRACE` (low 16 bits: data for the tracer).
pub const RET_TRACE: u32 = 0x7ff0_0000;
/// `SECCOMP_RET_LOG`.
pub const RET_LOG: u32 = 0x7ffc_0000;
/// `SECCOMP_RET_ALLOW`.
pub const RET_ALLOW: u32 = 0x7fff_0000;

/// The input of a seccomp filter (the kernel's `struct seccomp_data`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeccompData {
    /// Syscall number (x32 syscalls carry [`X32_SYSCALL_BIT`]).
    pub nr: u32,
    /// `AUDIT_ARCH_*` of the calling convention.
    pub arch: u32,
    /// Instruction pointer at the syscall.
    pub ip: u64,
    /// The six syscall arguments, as the registers held them.
    pub args: [u64; 6],
}

impl SeccompData {
    /// The 64 bytes the filter reads, little-endian as on x86.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&self.nr.to_le_bytes());
        b[4..8].copy_from_slice(&self.arch.to_le_bytes());
        b[8..16].copy_from_slice(&self.ip.to_le_bytes());
        for (i, a) in self.args.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        b
    }
}

/// Why the interpreter refused a program (the kernel's verifier would refuse it too).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InterpError {
    /// An opcode outside what seccomp filters may use.
    #[error("instruction {pc}: opcode {code:#06x} is not supported")]
    BadOpcode {
        /// Index of the instruction.
        pc: usize,
        /// Its opcode.
        code: u16,
    },
    /// A jump or fall-through past the last instruction.
    #[error("instruction {pc}: runs past the end of the program")]
    OutOfBounds {
        /// Index of the offending instruction.
        pc: usize,
    },
    /// A load outside `seccomp_data` or not 4-byte aligned.
    #[error("instruction {pc}: bad load offset {k}")]
    BadLoad {
        /// Index of the instruction.
        pc: usize,
        /// Its offset.
        k: u32,
    },
    /// Division by a zero constant or register.
    #[error("instruction {pc}: division by zero")]
    DivZero {
        /// Index of the instruction.
        pc: usize,
    },
}

/// Runs a seccomp filter over one `seccomp_data` and returns its verdict (`SECCOMP_RET_*`).
///
/// Supports the whole classic BPF subset the kernel accepts for seccomp (loads of
/// `seccomp_data`, scratch memory, ALU, jumps with K or X, returns), so libseccomp's
/// output runs here as well as cella's.
pub fn run(prog: &[Insn], data: &SeccompData) -> Result<u32, InterpError> {
    run_traced(prog, data).map(|(verdict, _)| verdict)
}

/// Like [`run`], and also returns which 32-bit words of `seccomp_data` were loaded
/// (bit i = bytes 4i..4i+4): bit 0 is `nr`, bit 1 `arch`, bits 2-3 `ip`, 4.. the arguments.
pub fn run_traced(prog: &[Insn], data: &SeccompData) -> Result<(u32, u16), InterpError> {
    let bytes = data.to_bytes();
    let mut loaded = 0u16;
    let (mut a, mut x): (u32, u32) = (0, 0);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    loop {
        let Some(ins) = prog.get(pc) else {
            return Err(InterpError::OutOfBounds { pc });
        };
        let k = ins.k;
        let class = ins.code & 0x07;
        match class {
            // BPF_LD / BPF_LDX
            0x00 | 0x01 => {
                let mode = ins.code & 0xe0;
                let val = match mode {
                    0x20 if ins.code & 0x18 == 0 => {
                        // BPF_ABS, BPF_W
                        if k % 4 != 0 || k as usize + 4 > bytes.len() {
                            return Err(InterpError::BadLoad { pc, k });
                        }
                        let i = k as usize;
                        loaded |= 1 << (i / 4);
                        u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]])
                    }
                    0x80 => 64, // BPF_LEN: sizeof(seccomp_data)
                    0x00 => k,  // BPF_IMM
                    0x60 => {
                        // BPF_MEM
                        *mem.get(k as usize).ok_or(InterpError::BadLoad { pc, k })?
                    }
                    _ => return Err(InterpError::BadOpcode { pc, code: ins.code }),
                };
                if class == 0x00 {
                    a = val;
                } else {
                    x = val;
                }
            }
            // BPF_ST / BPF_STX
            0x02 | 0x03 => {
                let slot = mem
                    .get_mut(k as usize)
                    .ok_or(InterpError::BadLoad { pc, k })?;
                *slot = if class == 0x02 { a } else { x };
            }
            // BPF_ALU
            0x04 => {
                let src = if ins.code & 0x08 != 0 { x } else { k };
                a = match ins.code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 => a.checked_div(src).ok_or(InterpError::DivZero { pc })?,
                    0x40 => a | src,
                    0x50 => a & src,
                    0x60 => a.checked_shl(src).unwrap_or(0),
                    0x70 => a.checked_shr(src).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 => a.checked_rem(src).ok_or(InterpError::DivZero { pc })?,
                    0xa0 => a ^ src,
                    _ => return Err(InterpError::BadOpcode { pc, code: ins.code }),
                };
            }
            // BPF_JMP
            0x05 => {
                let op = ins.code & 0xf0;
                if op == 0x00 {
                    pc = pc + 1 + k as usize;
                    continue;
                }
                let src = if ins.code & 0x08 != 0 { x } else { k };
                let cond = match op {
                    0x10 => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    0x40 => a & src != 0,
                    _ => return Err(InterpError::BadOpcode { pc, code: ins.code }),
                };
                pc = pc + 1 + if cond { ins.jt } else { ins.jf } as usize;
                continue;
            }
            // BPF_RET
            0x06 => {
                return match ins.code & 0x18 {
                    0x00 => Ok((k, loaded)),
                    0x10 => Ok((a, loaded)),
                    _ => Err(InterpError::BadOpcode { pc, code: ins.code }),
                };
            }
            // BPF_MISC: TAX / TXA
            _ => match ins.code {
                0x07 => x = a,
                0x87 => a = x,
                _ => return Err(InterpError::BadOpcode { pc, code: ins.code }),
            },
        }
        pc += 1;
    }
}

/// Parses a filter in the kernel's binary layout (8 bytes per instruction, native endian),
/// as libseccomp's `seccomp_export_bpf` writes it.
pub fn from_bytes(raw: &[u8]) -> Vec<Insn> {
    raw.chunks_exact(8)
        .map(|c| Insn {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect()
}
