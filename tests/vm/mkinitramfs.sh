#!/bin/sh
# Builds the initramfs of the pure cgroup-v2 test VM:
#   tests/vm/mkinitramfs.sh OUT.cpio.gz STATIC_CELLA [KERNEL_VERSION [BUSYBOX]]
# It holds a static busybox with its applet links (the VM's userland), /init, the suite,
# the static cella, a busybox rootfs for the containers at /vm/rootfs, and, when
# KERNEL_VERSION's modules are installed, brd.ko (a RAM disk: the VM's only block device,
# for the io.max throttle checks).
# Needs root (mknod /dev/console), cpio and gzip.
set -eu
out=$1
cella=$2
kver=${3:-}
busybox=${4:-$(command -v busybox)}
here=$(cd "$(dirname "$0")" && pwd)

stage=$(mktemp -d "${out}.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# applets DIR: busybox plus one symlink per applet under DIR.
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
mkdir -p "$stage/dev" "$stage/proc" "$stage/sys" "$stage/run" "$stage/tmp" "$stage/etc" "$stage/vm"
# The kernel opens /dev/console for init's stdio before anything is mounted.
mknod -m 600 "$stage/dev/console" c 5 1
mknod -m 666 "$stage/dev/null" c 1 3
cp "$here/init" "$stage/init"
chmod 755 "$stage/init"
cp "$here/suite.sh" "$here/lib.sh" "$stage/vm/"
cp "$cella" "$stage/vm/cella"
chmod 755 "$stage/vm/cella"
mkdir -p "$stage/vm/modules"
brd="/lib/modules/$kver/kernel/drivers/block/brd.ko"
if [ -n "$kver" ] && [ -f "$brd" ]; then
    cp "$brd" "$stage/vm/modules/"
fi
echo "root:x:0:0:root:/root:/bin/sh" > "$stage/etc/passwd"
echo "root:x:0:" > "$stage/etc/group"

r="$stage/vm/rootfs"
applets "$r"
mkdir -p "$r/etc" "$r/proc" "$r/sys" "$r/dev" "$r/tmp" "$r/root" "$r/run" "$r/opt"
chmod 1777 "$r/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$r/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$r/etc/group"

(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp"
mv "$out.tmp" "$out"
