#!/usr/bin/env python3
"""Matches a symbol ordering list against the objects of one link (see scripts/cella-cc).

    order-symbols.py LIST OUT OBJECT...

LIST holds one symbol per line ('#' starts a comment), mangled as in the build that
produced it. Each is looked up in the objects' symbol tables: kept when it is there as
it is; otherwise replaced by every symbol of the objects with the same demangled name
(a crate's hash changed, or LLVM renumbered a local copy); C names (glibc's, from the
archives) pass through unchanged. OUT gets the result, in LIST's order. A summary goes
to stderr; the exit status is non-zero only when the tools fail."""

import re
import subprocess
import sys

# What changes between builds of the same function: LLVM's numbering of local copies,
# the legacy mangling's hash, v0's crate disambiguators.
SUFFIX = re.compile(r"(\.llvm\.\d+|\.\d+)+$")
HASH = re.compile(r"::h[0-9a-f]{16}$")
DISAMBIGUATOR = re.compile(r"\[[0-9a-f]{1,16}\]")


def defined_symbols(obj):
    out = subprocess.run(
        ["nm", "-P", "--defined-only", obj], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[0] for line in out.splitlines() if len(line.split()) >= 2]


def demangle(names):
    if not names:
        return []
    out = subprocess.run(
        ["c++filt"], input="\n".join(names) + "\n", capture_output=True, text=True, check=True
    ).stdout.splitlines()
    if len(out) != len(names):
        raise RuntimeError("c++filt returned a different number of lines")
    return [DISAMBIGUATOR.sub("", HASH.sub("", SUFFIX.sub("", d))) for d in out]


def is_mangled(name):
    return name.startswith(("_ZN", "_R"))


def main():
    list_path, out_path, objs = sys.argv[1], sys.argv[2], sys.argv[3:]
    wanted = []
    with open(list_path) as f:
        for line in f:
            name = line.split("#", 1)[0].strip()
            if name:
                wanted.append(name)
    present = []
    for obj in objs:
        present.extend(defined_symbols(obj))
    present_set = set(present)
    mangled_present = [n for n in present if is_mangled(n)]
    by_key = {}
    for name, key in zip(mangled_present, demangle(mangled_present)):
        by_key.setdefault(key, []).append(name)
    stale = [w for w in wanted if is_mangled(w) and w not in present_set]
    stale_keys = dict(zip(stale, demangle(stale)))
    result, done = [], set()
    exact = by_name = missing = 0
    for w in wanted:
        if w in present_set or not is_mangled(w):
            names = [w]
            exact += w in present_set
        else:
            names = by_key.get(stale_keys[w], [])
            by_name += bool(names)
            missing += not names
        for n in names:
            if n not in done:
                done.add(n)
                result.append(n)
    summary = (
        f"order-symbols: {len(wanted)} listed: {exact} found as listed, {by_name} by "
        f"demangled name, {missing} not in this link; {len(result)} symbols ordered"
    )
    with open(out_path, "w") as f:
        # The first line is for people and tests (lld skips comments).
        f.write(f"# {summary}\n" + "\n".join(result) + "\n")
    print(summary, file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except (OSError, subprocess.CalledProcessError, RuntimeError) as e:
        print(f"order-symbols: {e}", file=sys.stderr)
        sys.exit(1)
