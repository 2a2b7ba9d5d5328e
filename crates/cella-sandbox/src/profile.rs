//! The built-in seccomp profile: an allowlist for compiled programs (C, C++) and common
//! interpreters (Python, shells), generated as an OCI `linux.seccomp` object so it goes
//! through the same compiler as any `--seccomp FILE`.
//!
//! Shape: every syscall the tables know and the list does not allow gets
//! `SCMP_ACT_NOTIFY`, so the supervisor learns of each denied call (number and ABI, never
//! the arguments) and judges the run SV; numbers the tables do not know fail with ENOSYS
//! (new syscalls, so libc falls back); other ABIs (i386, x32) are killed by the filter
//! (SIGSYS, also judged SV). The compiler refuses SCMP_ACT_NOTIFY as the default action,
//! hence the explicit list.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction as Act, LinuxSeccompArg, LinuxSeccompBuilder,
    LinuxSeccompOperator as Op, LinuxSyscall, LinuxSyscallBuilder,
};

/// Allowed without looking at arguments. One line per family; reviewed data.
#[rustfmt::skip]
const ALLOW: &[&str] = &[
    // files and descriptors
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
    "preadv2", "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range",
    "dup", "dup2", "dup3", "lseek", "fcntl", "flock", "fsync", "fdatasync", "sync",
    "syncfs", "sync_file_range", "truncate", "ftruncate", "fallocate", "fadvise64",
    "readahead", "sendfile", "splice", "tee", "vmsplice", "copy_file_range", "pipe",
    "pipe2", "ioctl",
    // metadata and directories
    "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access",
    "faccessat", "faccessat2", "getdents", "getdents64", "getcwd", "chdir", "fchdir",
    "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "link", "linkat",
    "unlink", "unlinkat", "symlink", "symlinkat", "readlink", "readlinkat", "chmod",
    "fchmod", "fchmodat", "chown", "fchown", "lchown", "fchownat", "umask", "utime",
    "utimes", "utimensat", "futimesat", "getxattr", "lgetxattr", "fgetxattr",
    "listxattr", "llistxattr", "flistxattr",
    // memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "msync", "mincore", "madvise",
    "mlock", "mlock2", "munlock", "memfd_create", "membarrier", "get_mempolicy",
    "set_mempolicy", "mbind", "pkey_alloc", "pkey_free", "pkey_mprotect",
    // processes and threads (clone is argument-checked below)
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
    "getpid", "getppid", "gettid", "set_tid_address", "set_robust_list",
    "get_robust_list", "rseq", "arch_prctl", "prctl", "futex", "futex_waitv",
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
    "sched_getscheduler", "sched_get_priority_max", "sched_get_priority_min",
    "sched_rr_get_interval", "sched_getattr", "getpriority", "setpriority", "setpgid",
    "getpgid", "getpgrp", "setsid", "getsid", "uname", "sysinfo", "getrusage", "times",
    "getrlimit", "setrlimit", "prlimit64", "getcpu", "pidfd_open", "restart_syscall",
    // identity
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
    "capget", "ioprio_get",
    // identity changes: without capabilities only to ids already held (programs drop
    // setuid privileges this way: busybox at every start)
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
    "setfsgid", "setgroups",
    // signals (only into the sandbox's own pid namespace)
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
    "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "rt_sigsuspend",
    "sigaltstack", "kill", "tkill", "tgkill", "pause", "alarm", "signalfd", "signalfd4",
    // time
    "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday",
    "time", "getitimer", "setitimer", "timer_create", "timer_settime", "timer_gettime",
    "timer_getoverrun", "timer_delete", "timerfd_create", "timerfd_settime",
    "timerfd_gettime",
    // waiting and events
    "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "inotify_init",
    "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    // sockets (socket itself is argument-checked below); the network namespace holds
    // only a loopback
    "connect", "accept", "accept4", "bind", "listen", "shutdown", "sendto", "recvfrom",
    "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "getsockname", "getpeername",
    "socketpair", "setsockopt", "getsockopt",
    // System V IPC (private IPC namespace)
    "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl",
    "msgget", "msgsnd", "msgrcv", "msgctl",
    // randomness
    "getrandom",
];

/// Namespace flags clone(2) must not carry (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS,
/// CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWTIME).
const CLONE_NS_FLAGS: u64 = 0x0002_0000
    | 0x0200_0000
    | 0x0400_0000
    | 0x0800_0000
    | 0x1000_0000
    | 0x2000_0000
    | 0x4000_0000
    | 0x0000_0080;

/// Socket families allowed: AF_UNIX, AF_INET, AF_INET6 (stream, datagram, seqpacket
/// only: no raw sockets) and AF_NETLINK (libc's interface queries).
const FAMILIES: &[u64] = &[1, 2, 10];
const TYPES: &[u64] = &[1, 2, 5];
const AF_NETLINK: u64 = 16;

fn rule(names: &[&str], action: Act, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let mut b = LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(action);
    if !args.is_empty() {
        b = b.args(args);
    }
    b.build().expect("every field of the rule is set")
}

fn arg(index: usize, op: Op, value: u64, value_two: u64) -> LinuxSeccompArg {
    oci_spec::runtime::LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value)
        .value_two(value_two)
        .build()
        .expect("every field of the argument is set")
}

/// The built-in profile.
pub fn default_profile() -> LinuxSeccomp {
    let mut rules = vec![rule(ALLOW, Act::ScmpActAllow, Vec::new())];
    // clone without any namespace flag (fork, threads).
    rules.push(rule(
        &["clone"],
        Act::ScmpActAllow,
        vec![arg(0, Op::ScmpCmpMaskedEq, CLONE_NS_FLAGS, 0)],
    ));
    // clone3 passes its flags in memory, which a filter cannot read: ENOSYS makes libc
    // fall back to clone, which is checked.
    let mut clone3 = rule(&["clone3"], Act::ScmpActErrno, Vec::new());
    clone3.set_errno_ret(Some(libc::ENOSYS as u32));
    rules.push(clone3);
    for &family in FAMILIES {
        for &ty in TYPES {
            rules.push(rule(
                &["socket"],
                Act::ScmpActAllow,
                vec![
                    arg(0, Op::ScmpCmpEq, family, 0),
                    arg(1, Op::ScmpCmpMaskedEq, 0xf, ty),
                ],
            ));
        }
    }
    rules.push(rule(
        &["socket"],
        Act::ScmpActAllow,
        vec![arg(0, Op::ScmpCmpEq, AF_NETLINK, 0)],
    ));
    // Everything else the tables know: the supervisor hears of it.
    let special = ["clone", "clone3", "socket"];
    let denied: Vec<&str> = cella_seccomp::syscall_names()
        .filter(|n| !ALLOW.contains(n) && !special.contains(n))
        .filter(|n| cella_seccomp::syscall_nr_x86_64(n).is_some())
        .collect();
    rules.push(rule(&denied, Act::ScmpActNotify, Vec::new()));
    // socket() and clone() calls that matched no rule above (raw sockets, other
    // families, namespace flags). The condition always holds but keeps the rule
    // conditional: an unconditional rule would decide the syscall whatever the others say.
    for name in ["socket", "clone"] {
        rules.push(rule(
            &[name],
            Act::ScmpActNotify,
            vec![arg(0, Op::ScmpCmpGe, 0, 0)],
        ));
    }
    LinuxSeccompBuilder::default()
        .default_action(Act::ScmpActErrno)
        .default_errno_ret(libc::ENOSYS as u32)
        .architectures(vec![Arch::ScmpArchX86_64])
        .listener_path(NOTIFY_PLACEHOLDER)
        .syscalls(rules)
        .build()
        .expect("every field of the profile is set")
}

/// The compiler wants a listener path whenever a rule notifies; the sandbox's own
/// supervisor is the listener (the fd goes over the sandbox channel), so the path is a
/// placeholder that is never connected to.
pub const NOTIFY_PLACEHOLDER: &str = "/dev/null";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_and_fits() {
        let p = default_profile();
        let prog = cella_seccomp::compile(&p).expect("the built-in profile compiles");
        assert!(prog.needs_notify());
        assert!(prog.len() < 4096);
    }

    fn verdict(nr: &str, args: [u64; 6]) -> u32 {
        use cella_seccomp::bpf;
        let prog = cella_seccomp::compile(&default_profile()).expect("compiles");
        let data = bpf::SeccompData {
            nr: cella_seccomp::syscall_nr_x86_64(nr).expect("known"),
            arch: 0xc000_003e,
            ip: 0,
            args,
        };
        bpf::run(prog.instructions(), &data).expect("runs") & 0xffff_0000
    }

    #[test]
    fn behaviour() {
        use cella_seccomp::bpf::{RET_ALLOW, RET_USER_NOTIF};
        // socket(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC|SOCK_NONBLOCK)
        assert_eq!(verdict("socket", [1, 0x80801, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(verdict("socket", [2, 2, 0, 0, 0, 0]), RET_ALLOW);
        // socket(AF_INET, SOCK_RAW), socket(AF_PACKET, ...)
        assert_eq!(verdict("socket", [2, 3, 0, 0, 0, 0]), RET_USER_NOTIF);
        assert_eq!(verdict("socket", [17, 3, 0, 0, 0, 0]), RET_USER_NOTIF);
        // fork-like clone, and clone with CLONE_NEWUSER
        assert_eq!(verdict("clone", [0x1200011, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            verdict("clone", [0x1000_0000 | 17, 0, 0, 0, 0, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(verdict("read", [0; 6]), RET_ALLOW);
        for denied in ["ptrace", "mount", "unshare", "keyctl", "setns", "bpf"] {
            assert_eq!(verdict(denied, [0; 6]), RET_USER_NOTIF, "{denied}");
        }
    }

    #[test]
    fn denied_numbers_have_names() {
        assert_eq!(
            cella_seccomp::syscall_name(0xc000_003e, 272),
            Some("unshare")
        );
        assert_eq!(cella_seccomp::syscall_name(0x4000_0003, 26), Some("ptrace"));
        assert_eq!(
            cella_seccomp::syscall_name(0xc000_003e, 0x4000_0000 | 165),
            Some("mount")
        );
        assert_eq!(cella_seccomp::syscall_name(0xc000_003e, 100_000), None);
        assert_eq!(cella_seccomp::syscall_name(0x1234, 0), None);
    }

    #[test]
    fn allowlist_names_are_known() {
        for n in ALLOW {
            assert!(
                cella_seccomp::syscall_nr_x86_64(n).is_some(),
                "unknown syscall {n}"
            );
        }
    }
}
