#!/bin/sh
# Builds the initramfs of the systemd test VM:
#   tests/vm/mksystemd-initramfs.sh OUT.cpio.gz STATIC_CELLA KERNEL_VERSION [BUSYBOX]
# A static busybox with its applet links, tests/vm/systemd-init as /init, and under /vm:
# the suite (systemd-suite.sh, sourcing systemd-hybrid.sh on a hybrid boot), the static cella, a busybox rootfs for the containers, and the modules the
# first stage needs to reach the host's / (virtio-pci, 9p, overlay) from
# /lib/modules/KERNEL_VERSION. Needs root (mknod), cpio and gzip.
set -eu
out=$1
cella=$2
kver=$3
busybox=${4:-$(command -v busybox)}
here=$(cd "$(dirname "$0")" && pwd)

stage=$(mktemp -d "${out}.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT

applets() {
    mkdir -p "$1/bin" "$1/sbin" "$1/usr/bin" "$1/usr/sbin"
    cp "$busybox" "$1/bin/busybox"
    "$busybox" --list-full | while read -r a; do
        [ "$a" = bin/busybox ] && continue
        [ -e "$1/$a" ] && continue
        ln -s /bin/busybox "$1/$a"
    done
}

applets "$stage"
mkdir -p "$stage/dev" "$stage/proc" "$stage/sys" "$stage/vm/modules"
mknod -m 600 "$stage/dev/console" c 5 1
mknod -m 666 "$stage/dev/null" c 1 3
cp "$here/systemd-init" "$stage/init"
chmod 755 "$stage/init"
cp "$here/systemd-suite.sh" "$here/systemd-hybrid.sh" "$here/lib.sh" "$stage/vm/"
cp "$cella" "$stage/vm/cella"
chmod 755 "$stage/vm/cella"
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci \
    netfs fscache 9pnet 9pnet_virtio 9p overlay; do
    f=$(modinfo -k "$kver" -F filename "$m" 2>/dev/null || true)
    # Built into the kernel ("(builtin)") or missing: nothing to load.
    case "$f" in /*) cp "$f" "$stage/vm/modules/$m.ko" ;; esac
done

r="$stage/vm/rootfs"
applets "$r"
mkdir -p "$r/etc" "$r/proc" "$r/sys" "$r/dev" "$r/tmp" "$r/root" "$r/run"
chmod 1777 "$r/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$r/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$r/etc/group"

(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp"
mv "$out.tmp" "$out"
