#!/bin/sh
# Helpers shared by the VM suites (suite.sh, systemd-suite.sh), sourced after they set
# CELLA (the runtime command line), ROOTFS (the shared busybox rootfs) and B (where
# bundles go). Every check prints one line: RESULT <name> PASS|FAIL <detail>.

pass() { echo "RESULT $1 PASS $2"; }
fail() { echo "RESULT $1 FAIL $2"; }
# check NAME WANT GOT
check() {
    if [ "$2" = "$3" ]; then pass "$1" "$3"; else fail "$1" "want '$2' got '$3'"; fi
}
# check_true NAME DETAIL COMMAND...: PASS when the command succeeds.
check_true() {
    n=$1 d=$2
    shift 2
    if "$@"; then pass "$n" "$d"; else fail "$n" "$d"; fi
}
# read_file PATH: the first line of a file, or <missing>.
rd() { if [ -e "$1" ]; then head -n 1 "$1"; else echo "<missing>"; fi; }
# state_field ID FIELD: a string or number field of `cella state`.
state_field() {
    $CELLA state "$1" 2>/dev/null | sed -n "s/^ *\"$2\": *\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" | head -n 1
}
# wait_status ID STATUS: polls `cella state` for up to 30 s.
wait_status() {
    i=0
    while [ $i -lt 300 ]; do
        [ "$(state_field "$1" status)" = "$2" ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
# wait_file PATH PATTERN: polls a file for a line matching PATTERN for up to 30 s.
wait_grep() {
    i=0
    while [ $i -lt 300 ]; do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

CAPS='["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"]'

# mkbundle NAME SCRIPT RESOURCES_JSON [CGROUPS_PATH]: a bundle running `sh -c SCRIPT`
# (SCRIPT goes into a JSON string as is: write a double quote as \") over the shared read-only
# busybox rootfs, with a cgroup namespace and the cgroup2 mount at /sys/fs/cgroup.
mkbundle() {
    mkdir -p "$B/$1"
    cgp=""
    [ -n "$4" ] && cgp="\"cgroupsPath\": \"$4\","
    cat > "$B/$1/config.json" <<JSON
{
  "ociVersion": "1.2.0",
  "hostname": "$1",
  "process": {
    "terminal": false,
    "user": {"uid": 0, "gid": 0},
    "args": ["sh", "-c", "$2"],
    "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
    "cwd": "/",
    "capabilities": {"bounding": $CAPS, "effective": $CAPS, "permitted": $CAPS},
    "noNewPrivileges": true
  },
  "root": {"path": "$ROOTFS", "readonly": true},
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
  ],
  "linux": {
    $cgp
    "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}, {"type": "network"}],
    "resources": $3
  }
}
JSON
}
