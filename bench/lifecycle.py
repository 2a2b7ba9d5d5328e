#!/usr/bin/env python3
"""Times container lifecycles for several OCI runtimes, interleaved so that each runtime
sees the same machine state, and prints a table of medians, ratios and peak RSS."""
import argparse, json, os, random, resource, shutil, statistics, subprocess, sys, time


def make_bundle(path, cella, seccomp=None):
    rootfs = os.path.join(path, "rootfs")
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"]:
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin/busybox"))
    for applet in ["sh", "true"]:
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    subprocess.run([cella, "spec", "--bundle", path], check=True)
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    # Debian's crun 1.8.1 refuses versions newer than it knows.
    cfg["ociVersion"] = "1.0.2"
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["/bin/true"]
    if seccomp:
        with open(seccomp) as f:
            cfg["linux"]["seccomp"] = json.load(f)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)


def one(runtime, root, bundle, cid, mode):
    """One lifecycle; returns its wall time in ms."""
    base = [runtime, "--root", root]
    dn = subprocess.DEVNULL
    t = time.perf_counter_ns()
    if mode == "run+seccomp":
        bundle = bundle + "-seccomp"
        mode = "run"
    if mode == "lifecycle":
        subprocess.run(base + ["create", "--bundle", bundle, cid], check=True, stdout=dn, stderr=dn)
        subprocess.run(base + ["start", cid], check=True, stdout=dn)
        subprocess.run(base + ["delete", "--force", cid], check=True, stdout=dn)
    else:
        subprocess.run(base + ["run", "--bundle", bundle, cid], check=True, stdout=dn, stderr=dn)
        subprocess.run(base + ["delete", "--force", cid], stdout=dn, stderr=dn)
    return (time.perf_counter_ns() - t) / 1e6


def peak_rss_kib(runtime, root, bundle, rss_run):
    """Peak RSS of `run` (the runtime and what it waits for), through a small C parent."""
    dn = subprocess.DEVNULL
    out = subprocess.run([rss_run, runtime, "--root", root, "run", "--bundle", bundle, "rss"],
                         stdout=subprocess.PIPE, stderr=dn, text=True)
    subprocess.run([runtime, "--root", root, "delete", "--force", "rss"], stdout=dn, stderr=dn)
    return int(out.stdout.strip().splitlines()[-1] or 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-bundle")
    ap.add_argument("--seccomp", help="an OCI seccomp profile for the run+seccomp column")
    ap.add_argument("--cella")
    ap.add_argument("--bundle")
    ap.add_argument("--work")
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--rss-run")
    ap.add_argument("runtimes", nargs="*")
    a = ap.parse_args()
    if a.make_bundle:
        make_bundle(a.make_bundle, a.cella)
        if a.seccomp:
            make_bundle(a.make_bundle + "-seccomp", a.cella, a.seccomp)
        return
    runtimes = [r.split("=", 1) for r in a.runtimes]
    modes = ("lifecycle", "run") + (("run+seccomp",) if os.path.isdir(a.bundle + "-seccomp") else ())
    times = {(name, m): [] for name, _ in runtimes for m in modes}
    roots = {}
    for name, path in runtimes:
        roots[name] = os.path.join(a.work, "root-" + name)
        # Warm up page cache and any one-time setup.
        for m in modes:
            for i in range(3):
                one(path, roots[name], a.bundle, f"warm-{m}-{i}", m)
    rng = random.Random(1)
    for i in range(a.n):
        for m in modes:
            # A fresh random order each round: what one runtime leaves to finish in the
            # background (network namespace teardown, RCU callbacks, the cgroup rwsem's
            # grace period) speeds up or slows down whoever runs next, so a fixed or
            # rotated order would always pair the same runtimes.
            order = rng.sample(runtimes, len(runtimes))
            for name, path in order:
                times[(name, m)].append(one(path, roots[name], a.bundle, f"b{i}", m))
    rss = {name: peak_rss_kib(path, roots[name], a.bundle, a.rss_run) for name, path in runtimes}
    base = "crun" if any(n == "crun" for n, _ in runtimes) else runtimes[0][0]
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{a.n} iterations each, interleaved in random order; medians in ms; ratio = runtime / {base}\n")
    heads = {"lifecycle": "create+start+delete", "run": "run", "run+seccomp": "run, Docker-like seccomp"}
    print("| runtime | " + " | ".join(f"{heads[m]} | ratio" for m in modes) + " | peak RSS (MiB) | ratio |")
    print("|---" * (2 * len(modes) + 3) + "|")
    for name, _ in runtimes:
        cells = [f"{med[(name, m)]:.2f} | {med[(name, m)] / med[(base, m)]:.2f}x" for m in modes]
        print(f"| {name} | " + " | ".join(cells) + f" | {rss[name] / 1024:.1f} | {rss[name] / max(rss[base], 1):.2f}x |")


if __name__ == "__main__":
    main()
