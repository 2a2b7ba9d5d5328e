#!/usr/bin/python3
"""Compiles an OCI seccomp profile with libseccomp the way runc does, exports the BPF.

usage: libseccomp_export.py PROFILE.json OUT.bpf [--load]
Prints the names libseccomp could not resolve (skipped, as runc skips them), one a line.
With --load, also loads the filter into this process and then exits (for benchmarks).
"""
import json
import sys

import seccomp

ACTIONS = {
    "SCMP_ACT_KILL": lambda e: seccomp.KILL,
    "SCMP_ACT_KILL_THREAD": lambda e: seccomp.KILL,
    "SCMP_ACT_KILL_PROCESS": lambda e: seccomp.KILL_PROCESS,
    "SCMP_ACT_TRAP": lambda e: seccomp.TRAP,
    "SCMP_ACT_ERRNO": lambda e: seccomp.ERRNO(e),
    "SCMP_ACT_TRACE": lambda e: seccomp.TRACE(e),
    "SCMP_ACT_LOG": lambda e: seccomp.LOG,
    "SCMP_ACT_ALLOW": lambda e: seccomp.ALLOW,
    "SCMP_ACT_NOTIFY": lambda e: seccomp.NOTIFY,
}
OPS = {
    "SCMP_CMP_NE": seccomp.NE,
    "SCMP_CMP_LT": seccomp.LT,
    "SCMP_CMP_LE": seccomp.LE,
    "SCMP_CMP_EQ": seccomp.EQ,
    "SCMP_CMP_GE": seccomp.GE,
    "SCMP_CMP_GT": seccomp.GT,
    "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ,
}
ARCHES = {
    "SCMP_ARCH_X86": seccomp.Arch.X86,
    "SCMP_ARCH_X32": seccomp.Arch.X32,
}

prof = json.load(open(sys.argv[1]))
errno_default = prof.get("defaultErrnoRet", 1)
default_key = (prof["defaultAction"], errno_default)
f = seccomp.SyscallFilter(ACTIONS[prof["defaultAction"]](errno_default))
for a in prof.get("architectures", []):
    if a in ARCHES:
        f.add_arch(ARCHES[a])
for sc in prof.get("syscalls", []):
    errno = sc.get("errnoRet", 1)
    # runc skips rules whose action is the default one.
    if (sc["action"], errno) == default_key:
        continue
    action = ACTIONS[sc["action"]](errno)
    args = [
        seccomp.Arg(a["index"], OPS[a["op"]], a["value"], a.get("valueTwo", 0))
        for a in sc.get("args", [])
    ]
    for name in sc["names"]:
        try:
            f.add_rule(action, name, *args)
        except Exception:
            print(name)
with open(sys.argv[2], "wb") as out:
    f.export_bpf(out)
if "--load" in sys.argv[3:]:
    f.load()
