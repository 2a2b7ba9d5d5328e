//! From config.json to a [`RootfsPlan`]: validation and every computation (flags, data
//! strings, C paths, which host facts apply), done once in the runtime before the fork.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use libc::c_ulong;
use oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, Spec};

use super::safepath::Create;
use super::sys;
use super::{RootfsError, RootfsOptions};

/// The planned root filesystem of one container: data only, executed by
/// [`RootfsPlan::mount_all`], [`RootfsPlan::pivot`] and [`RootfsPlan::finish`].
#[derive(Debug)]
pub struct RootfsPlan {
    /// Absolute host path of the rootfs (canonical).
    pub(crate) rootfs: CString,
    pub(crate) new_mount_ns: bool,
    pub(crate) in_userns: bool,
    pub(crate) no_pivot: bool,
    /// Applied to "/" first, so nothing we mount propagates back to the host.
    pub(crate) root_propagation: c_ulong,
    /// `linux.rootfsPropagation`, applied again to the new "/" after the pivot.
    pub(crate) final_propagation: Option<c_ulong>,
    /// The mount point holding the rootfs on the host, made private when the requested
    /// propagation is shared (pivot_root refuses a shared parent).
    pub(crate) parent_private: Option<CString>,
    pub(crate) mounts: Vec<MountStep>,
    /// True unless /dev is a bind mount: create devices, symlinks and ptmx.
    pub(crate) setup_dev: bool,
    pub(crate) devices: Vec<DeviceStep>,
    /// (name in /dev, symlink target).
    pub(crate) dev_symlinks: Vec<(CString, CString)>,
    pub(crate) readonly_paths: Vec<PathStep>,
    pub(crate) masked_paths: Vec<PathStep>,
    /// Data for the read-only tmpfs over masked directories (the SELinux label, if any).
    pub(crate) mask_dir_data: Option<CString>,
    pub(crate) readonly_root: bool,
}

/// One `mounts[i]` entry, ready for mount(2).
#[derive(Debug)]
pub(crate) struct MountStep {
    /// `mounts[i]`, for error messages.
    pub(crate) field: String,
    /// Clean absolute destination inside the rootfs.
    pub(crate) destination: CString,
    pub(crate) kind: MountKind,
    /// MS_* flags other than propagation (and other than MS_BIND/MS_REC for binds).
    pub(crate) flags: c_ulong,
    pub(crate) data: Option<CString>,
    /// Propagation changes applied after the mount, each as its own mount(2).
    pub(crate) propagation: Vec<c_ulong>,
    /// Recursive attributes (`rro`, `rnosuid`...) as mount_setattr (set, clear) bits,
    /// applied to the whole mount tree after the mount.
    pub(crate) recursive_attr: Option<(u64, u64)>,
    /// `tmpcopyup`: copy what the destination held into the new tmpfs.
    pub(crate) copy_up: bool,
    /// What to create at the destination when it is missing.
    pub(crate) create: Create,
}

/// How a mount is made.
#[derive(Debug)]
pub(crate) enum MountKind {
    /// A bind mount of a host path (`rbind` when `recursive`).
    Bind { source: CString, recursive: bool },
    /// A new instance of a filesystem type.
    Fs { fstype: CString, source: CString },
    /// `cgroup` on a pure cgroup v2 host, or `cgroup2`: a cgroup2 mount, falling back in a
    /// user namespace (where the kernel refuses it without a cgroup namespace) to a bind
    /// of the container's own directory of the host's /sys/fs/cgroup, as runc does.
    Cgroup2 { source: CString },
    /// `cgroup` on a cgroup v1 or hybrid host: a tmpfs holding one entry per hierarchy.
    CgroupV1 { hierarchies: Vec<Hierarchy> },
}

/// One host cgroup v1 (or hybrid unified) hierarchy, as planned for a `cgroup` mount.
#[derive(Debug, Clone)]
pub(crate) struct Hierarchy {
    /// Directory name under the destination (the host mount point's name, e.g. `cpu`).
    pub(crate) name: CString,
    /// The host mount point (e.g. `/sys/fs/cgroup/cpu`).
    pub(crate) host_mount: Vec<u8>,
    /// The controller list as in /proc/self/cgroup (`cpu,cpuacct`, `name=systemd`, or
    /// empty for the v2 hierarchy).
    pub(crate) key: Vec<u8>,
    /// Data for a fresh mount of it (used with a new cgroup namespace).
    pub(crate) data: Option<CString>,
    /// Filesystem type (`cgroup` or `cgroup2`).
    pub(crate) fstype: CString,
    /// Symlinks to create next to it for co-mounted controllers (`cpu` -> `cpu,cpuacct`).
    pub(crate) links: Vec<CString>,
    /// True to mount a new instance (in a new cgroup namespace), false to bind the
    /// container's own cgroup directory of the host hierarchy read-only.
    pub(crate) fresh: bool,
    /// Where it goes inside the rootfs (`<destination>/<name>`), set when planned.
    pub(crate) target: CString,
}

/// One `linux.devices[i]` entry or default device.
#[derive(Debug)]
pub(crate) struct DeviceStep {
    /// `linux.devices[i]` or `default device`, for errors.
    pub(crate) field: String,
    /// Clean absolute path inside the rootfs.
    pub(crate) path: CString,
    /// Its parent directory inside the rootfs, and its file name.
    pub(crate) dir: CString,
    pub(crate) name: CString,
    /// S_IFCHR/S_IFBLK/S_IFIFO | permission bits.
    pub(crate) mode: u32,
    pub(crate) dev: u64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// One masked or read-only path.
#[derive(Debug)]
pub(crate) struct PathStep {
    pub(crate) field: String,
    pub(crate) path: CString,
}

/// What the plan needs to know about the host, probed once (and faked in tests).
#[derive(Debug, Clone, Default)]
pub(crate) struct HostFacts {
    /// /sys/fs/selinux/enforce exists.
    pub(crate) selinux: bool,
    /// /sys/fs/cgroup is a cgroup2 mount.
    pub(crate) cgroup2_only: bool,
    /// The host's cgroup hierarchies (v1 and hybrid unified).
    pub(crate) hierarchies: Vec<Hierarchy>,
    /// /proc/kcore exists (then /dev/core links to it, as runc does).
    pub(crate) kcore: bool,
    /// /dev/mqueue is an mqueue mount (bound into a rootless container sharing the
    /// host's ipc namespace, which may not mount its own).
    pub(crate) mqueue: bool,
    /// Host mount points (from /proc/self/mountinfo), to find the rootfs's parent mount.
    pub(crate) mount_points: Vec<PathBuf>,
}

impl HostFacts {
    /// Looks at the running host.
    pub(crate) fn probe() -> HostFacts {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut facts = HostFacts::from_mountinfo(&mountinfo);
        facts.selinux = Path::new("/sys/fs/selinux/enforce").exists();
        facts.kcore = Path::new("/proc/kcore").exists();
        facts
    }

    /// The mount-related facts, from the text of /proc/self/mountinfo.
    pub(crate) fn from_mountinfo(mountinfo: &str) -> HostFacts {
        let mut facts = HostFacts::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mp) = left.split(' ').nth(4) else {
                continue;
            };
            let mp = unescape_mountinfo(mp);
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or("");
            let _source = r.next();
            let super_opts = r.next().unwrap_or("");
            if mp == Path::new("/dev/mqueue") {
                facts.mqueue = fstype == "mqueue";
            }
            if mp == Path::new("/sys/fs/cgroup") && fstype == "cgroup2" {
                facts.cgroup2_only = true;
            }
            if (fstype == "cgroup" || fstype == "cgroup2")
                && mp.parent() == Some(Path::new("/sys/fs/cgroup"))
            {
                let opts: Vec<&str> = super_opts
                    .split(',')
                    .filter(|o| *o != "rw" && *o != "ro")
                    .collect();
                let controllers: Vec<&str> = opts
                    .iter()
                    .copied()
                    .filter(|o| !o.contains('=') || o.starts_with("name="))
                    .filter(|o| {
                        !matches!(
                            *o,
                            "xattr"
                                | "noprefix"
                                | "clone_children"
                                | "cpuset_v2_mode"
                                | "favordynmods"
                        )
                    })
                    .collect();
                let name = mp
                    .file_name()
                    .map(|n| n.as_bytes().to_vec())
                    .unwrap_or_default();
                let key = if fstype == "cgroup2" {
                    Vec::new()
                } else {
                    controllers.join(",").into_bytes()
                };
                let links = if controllers.len() > 1 {
                    controllers
                        .iter()
                        .filter(|c| !c.starts_with("name=") && c.as_bytes() != name.as_slice())
                        .filter_map(|c| CString::new(*c).ok())
                        .collect()
                } else {
                    Vec::new()
                };
                let data = if fstype == "cgroup2" {
                    None
                } else if controllers.iter().all(|c| c.starts_with("name=")) {
                    CString::new(format!("none,{}", controllers.join(","))).ok()
                } else {
                    CString::new(controllers.join(",")).ok()
                };
                let Ok(name) = CString::new(name) else {
                    continue;
                };
                // A later mount on the same point hides the earlier one.
                facts.hierarchies.retain(|h| h.name != name);
                facts.hierarchies.push(Hierarchy {
                    name,
                    host_mount: mp.as_os_str().as_bytes().to_vec(),
                    key,
                    data,
                    fstype: CString::new(fstype).unwrap_or_default(),
                    links,
                    fresh: false,
                    target: CString::default(),
                });
            }
            facts.mount_points.push(mp);
        }
        facts
    }
}

fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

/// A mount option word, as runc and crun understand them.
enum Opt {
    /// Sets flags.
    Set(c_ulong),
    /// Clears flags.
    Clear(c_ulong),
    /// A propagation change applied after the mount.
    Propagation(c_ulong),
    /// bind / rbind.
    Bind { recursive: bool },
    /// A recursive attribute (mount_setattr): bits to set, bits to clear.
    Recursive(u64, u64),
}

fn option(word: &str) -> Option<Opt> {
    use Opt::*;
    Some(match word {
        "defaults" => Set(0),
        "ro" => Set(libc::MS_RDONLY),
        "rw" => Clear(libc::MS_RDONLY),
        "nosuid" => Set(libc::MS_NOSUID),
        "suid" => Clear(libc::MS_NOSUID),
        "nodev" => Set(libc::MS_NODEV),
        "dev" => Clear(libc::MS_NODEV),
        "noexec" => Set(libc::MS_NOEXEC),
        "exec" => Clear(libc::MS_NOEXEC),
        "sync" => Set(libc::MS_SYNCHRONOUS),
        "async" => Clear(libc::MS_SYNCHRONOUS),
        "dirsync" => Set(libc::MS_DIRSYNC),
        "remount" => Set(libc::MS_REMOUNT),
        "mand" => Set(libc::MS_MANDLOCK),
        "nomand" => Clear(libc::MS_MANDLOCK),
        "atime" => Clear(libc::MS_NOATIME),
        "noatime" => Set(libc::MS_NOATIME),
        "diratime" => Clear(libc::MS_NODIRATIME),
        "nodiratime" => Set(libc::MS_NODIRATIME),
        "relatime" => Set(libc::MS_RELATIME),
        "norelatime" => Clear(libc::MS_RELATIME),
        "strictatime" => Set(libc::MS_STRICTATIME),
        "nostrictatime" => Clear(libc::MS_STRICTATIME),
        "lazytime" => Set(libc::MS_LAZYTIME),
        "nolazytime" => Clear(libc::MS_LAZYTIME),
        "iversion" => Set(libc::MS_I_VERSION),
        "noiversion" => Clear(libc::MS_I_VERSION),
        "silent" => Set(libc::MS_SILENT),
        "loud" => Clear(libc::MS_SILENT),
        "private" => Propagation(libc::MS_PRIVATE),
        "rprivate" => Propagation(libc::MS_PRIVATE | libc::MS_REC),
        "shared" => Propagation(libc::MS_SHARED),
        "rshared" => Propagation(libc::MS_SHARED | libc::MS_REC),
        "slave" => Propagation(libc::MS_SLAVE),
        "rslave" => Propagation(libc::MS_SLAVE | libc::MS_REC),
        "unbindable" => Propagation(libc::MS_UNBINDABLE),
        "runbindable" => Propagation(libc::MS_UNBINDABLE | libc::MS_REC),
        "nosymfollow" => Set(libc::MS_NOSYMFOLLOW),
        "symfollow" => Clear(libc::MS_NOSYMFOLLOW),
        "rro" => Recursive(sys::MOUNT_ATTR_RDONLY, 0),
        "rrw" => Recursive(0, sys::MOUNT_ATTR_RDONLY),
        "rnosuid" => Recursive(sys::MOUNT_ATTR_NOSUID, 0),
        "rsuid" => Recursive(0, sys::MOUNT_ATTR_NOSUID),
        "rnodev" => Recursive(sys::MOUNT_ATTR_NODEV, 0),
        "rdev" => Recursive(0, sys::MOUNT_ATTR_NODEV),
        "rnoexec" => Recursive(sys::MOUNT_ATTR_NOEXEC, 0),
        "rexec" => Recursive(0, sys::MOUNT_ATTR_NOEXEC),
        "rnodiratime" => Recursive(sys::MOUNT_ATTR_NODIRATIME, 0),
        "rdiratime" => Recursive(0, sys::MOUNT_ATTR_NODIRATIME),
        "rnosymfollow" => Recursive(sys::MOUNT_ATTR_NOSYMFOLLOW, 0),
        "rsymfollow" => Recursive(0, sys::MOUNT_ATTR_NOSYMFOLLOW),
        // Access-time modes are one field: setting one clears the others.
        "rnoatime" => Recursive(sys::MOUNT_ATTR_NOATIME, sys::MOUNT_ATTR_ATIME_MASK),
        "rstrictatime" => Recursive(sys::MOUNT_ATTR_STRICTATIME, sys::MOUNT_ATTR_ATIME_MASK),
        "rrelatime" | "ratime" | "rnorelatime" | "rnostrictatime" => {
            Recursive(sys::MOUNT_ATTR_RELATIME, sys::MOUNT_ATTR_ATIME_MASK)
        }
        "bind" => Bind { recursive: false },
        "rbind" => Bind { recursive: true },
        _ => return None,
    })
}

/// Bare (no `=`) filesystem-specific words passed to the filesystem as data. For the
/// types listed here any other bare word is an unknown option; for other filesystem
/// types bare words go to the filesystem, which is the only one that knows them.
fn fs_words(fstype: &str) -> Option<&'static [&'static str]> {
    Some(match fstype {
        "tmpfs" => &[
            "inode32", "inode64", "noswap", "quota", "usrquota", "grpquota",
        ],
        "devpts" => &["newinstance"],
        "overlay" => &["userxattr", "volatile"],
        "proc" | "sysfs" | "mqueue" | "cgroup" | "cgroup2" => &[],
        _ => return None,
    })
}

/// Lexically cleans an absolute path: no `.`, `..` (clamped at "/"), or repeated slashes.
fn clean_absolute(p: &Path) -> Option<PathBuf> {
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Some(out)
}

fn cstring(field: &str, p: &Path) -> Result<CString, RootfsError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| RootfsError::Invalid {
        field: field.to_string(),
        message: format!("{:?} contains a NUL byte", p),
    })
}

fn cstr(field: &str, s: &str) -> Result<CString, RootfsError> {
    CString::new(s).map_err(|_| RootfsError::Invalid {
        field: field.to_string(),
        message: format!("{s:?} contains a NUL byte"),
    })
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> RootfsError {
    RootfsError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn propagation_flag(field: &str, value: &str) -> Result<c_ulong, RootfsError> {
    match option(value) {
        Some(Opt::Propagation(f)) => Ok(f),
        _ => Err(invalid(
            field,
            format!(
                "unknown propagation {value:?} (want private, shared, slave, unbindable or their r-variants)"
            ),
        )),
    }
}

/// The default devices every container gets (runc's list): path, major, minor.
const DEFAULT_DEVICES: [(&str, u32, u32); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// Plans the rootfs of `spec`; see [`RootfsPlan::from_spec`].
pub(crate) fn plan(
    spec: &Spec,
    bundle: &Path,
    opts: RootfsOptions,
    host: &HostFacts,
) -> Result<RootfsPlan, RootfsError> {
    // Relative bind sources are joined to the bundle and used later from the init, whose
    // cwd may differ: make the bundle absolute now.
    let bundle = &std::path::absolute(bundle).map_err(|source| RootfsError::Root {
        path: bundle.to_path_buf(),
        source,
    })?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root", "missing"))?;
    let root_path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let rootfs = std::fs::canonicalize(&root_path).map_err(|source| RootfsError::Root {
        path: root_path.clone(),
        source,
    })?;
    if !rootfs.is_dir() {
        return Err(RootfsError::Root {
            path: root_path,
            source: io::Error::from_raw_os_error(libc::ENOTDIR),
        });
    }
    let linux = spec.linux().as_ref();
    let namespaces = linux.and_then(|l| l.namespaces().as_ref());
    let new_ns = |t: LinuxNamespaceType| {
        namespaces.is_some_and(|ns| ns.iter().any(|n| n.typ() == t && n.path().is_none()))
    };
    let new_netns = new_ns(LinuxNamespaceType::Network);
    let host_ipcns =
        !namespaces.is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::Ipc));
    let new_cgroupns = new_ns(LinuxNamespaceType::Cgroup);
    let label = linux
        .and_then(|l| l.mount_label().as_ref())
        .filter(|l| host.selinux && !l.is_empty())
        .map(|l| format!("context=\"{l}\""));

    let mut plan = RootfsPlan {
        rootfs: cstring("root.path", &rootfs)?,
        new_mount_ns: opts.new_mount_namespace,
        in_userns: opts.in_user_namespace,
        no_pivot: opts.no_pivot,
        root_propagation: libc::MS_SLAVE | libc::MS_REC,
        final_propagation: None,
        parent_private: None,
        mounts: Vec::new(),
        setup_dev: true,
        devices: Vec::new(),
        dev_symlinks: Vec::new(),
        readonly_paths: Vec::new(),
        masked_paths: Vec::new(),
        mask_dir_data: match &label {
            Some(l) => Some(cstr("linux.mountLabel", l)?),
            None => None,
        },
        readonly_root: root.readonly().unwrap_or(false),
    };

    if let Some(p) = linux.and_then(|l| l.rootfs_propagation().as_ref()) {
        let flag = propagation_flag("linux.rootfsPropagation", p)?;
        plan.root_propagation = flag;
        plan.final_propagation = Some(flag);
        if flag & libc::MS_SHARED != 0 {
            let parent = host
                .mount_points
                .iter()
                .filter(|mp| rootfs.starts_with(mp))
                .max_by_key(|mp| mp.as_os_str().len());
            if let Some(parent) = parent {
                plan.parent_private = Some(cstring("root.path", parent)?);
            }
        }
    }

    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let field = format!("mounts[{i}]");
        let step = plan_mount(
            &field,
            m,
            bundle,
            opts,
            host,
            new_netns,
            new_cgroupns,
            host_ipcns,
            &label,
        )?;
        if step.destination.as_bytes() == b"/dev" && matches!(step.kind, MountKind::Bind { .. }) {
            plan.setup_dev = false;
        }
        plan.mounts.push(step);
    }

    if plan.setup_dev {
        plan_devices(&mut plan, linux.and_then(|l| l.devices().as_ref()))?;
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            plan.dev_symlinks
                .push((cstr("dev", name)?, cstr("dev", target)?));
        }
        if host.kcore {
            plan.dev_symlinks
                .push((cstr("dev", "core")?, cstr("dev", "/proc/kcore")?));
        }
    }

    for (name, list, out) in [
        (
            "linux.readonlyPaths",
            linux.and_then(|l| l.readonly_paths().as_ref()),
            &mut plan.readonly_paths,
        ),
        (
            "linux.maskedPaths",
            linux.and_then(|l| l.masked_paths().as_ref()),
            &mut plan.masked_paths,
        ),
    ] {
        for (i, p) in list.into_iter().flatten().enumerate() {
            let field = format!("{name}[{i}]");
            let clean = clean_absolute(Path::new(p))
                .ok_or_else(|| invalid(&field, format!("{p:?} is not an absolute path")))?;
            out.push(PathStep {
                path: cstring(&field, &clean)?,
                field,
            });
        }
    }

    if !plan.new_mount_ns {
        let used = [
            ("mounts", !plan.mounts.is_empty()),
            (
                "linux.devices",
                linux
                    .and_then(|l| l.devices().as_ref())
                    .is_some_and(|d| !d.is_empty()),
            ),
            ("linux.maskedPaths", !plan.masked_paths.is_empty()),
            ("linux.readonlyPaths", !plan.readonly_paths.is_empty()),
            ("root.readonly", plan.readonly_root),
            ("linux.rootfsPropagation", plan.final_propagation.is_some()),
        ];
        if let Some((field, _)) = used.iter().find(|(_, u)| *u) {
            return Err(invalid(
                *field,
                "needs a new mount namespace (linux.namespaces has no \"mount\" entry)",
            ));
        }
        plan.setup_dev = false;
        plan.devices.clear();
        plan.dev_symlinks.clear();
    }
    Ok(plan)
}

#[allow(clippy::too_many_arguments)]
fn plan_mount(
    field: &str,
    m: &oci_spec::runtime::Mount,
    bundle: &Path,
    opts: RootfsOptions,
    host: &HostFacts,
    new_netns: bool,
    new_cgroupns: bool,
    host_ipcns: bool,
    label: &Option<String>,
) -> Result<MountStep, RootfsError> {
    let dest_field = format!("{field}.destination");
    let destination = clean_absolute(m.destination()).ok_or_else(|| {
        invalid(
            &dest_field,
            format!("{:?} is not an absolute path", m.destination()),
        )
    })?;
    if destination == Path::new("/") {
        return Err(invalid(&dest_field, "cannot mount over the rootfs root"));
    }
    if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
        return Err(invalid(
            format!("{field}.uidMappings"),
            "id-mapped mounts are not supported",
        ));
    }
    let fstype = m.typ().as_deref().unwrap_or("");
    let opt_field = format!("{field}.options");
    let mut flags: c_ulong = 0;
    let mut propagation = Vec::new();
    let mut bind: Option<bool> = if fstype == "bind" { Some(false) } else { None };
    let mut data: Vec<&str> = Vec::new();
    let mut recursive_attr: Option<(u64, u64)> = None;
    let mut copy_up = false;
    for o in m.options().iter().flatten() {
        match option(o) {
            Some(Opt::Recursive(set, clear)) => {
                let (s, c) = recursive_attr.unwrap_or((0, 0));
                // A later word wins over an earlier one for the same bits.
                recursive_attr = Some(((s & !clear) | set, (c & !set) | clear));
            }
            Some(Opt::Set(f)) => flags |= f,
            Some(Opt::Clear(f)) => flags &= !f,
            Some(Opt::Propagation(f)) => propagation.push(f),
            Some(Opt::Bind { recursive }) => bind = Some(bind.unwrap_or(false) || recursive),
            None if o == "idmap" || o == "ridmap" => {
                return Err(invalid(
                    &opt_field,
                    format!("{o:?}: id-mapped mounts are not supported"),
                ));
            }
            None if o == "tmpcopyup" => copy_up = true,
            None if o == "notmpcopyup" => copy_up = false,
            None => data.push(o),
        }
    }

    if copy_up && (bind.is_some() || fstype != "tmpfs") {
        return Err(invalid(
            &opt_field,
            "\"tmpcopyup\" only applies to tmpfs mounts",
        ));
    }
    let destination_c = cstring(&dest_field, &destination)?;
    check_proc_destination(
        &dest_field,
        &destination,
        fstype,
        bind.is_some(),
        m.source().as_deref(),
    )?;
    if let Some(recursive) = bind {
        if let Some(o) = data.first() {
            return Err(invalid(&opt_field, format!("unknown mount option {o:?}")));
        }
        let source = m
            .source()
            .as_ref()
            .ok_or_else(|| invalid(format!("{field}.source"), "missing for a bind mount"))?;
        let source = if source.is_absolute() {
            source.clone()
        } else {
            bundle.join(source)
        };
        let meta = std::fs::metadata(&source).map_err(|e| RootfsError::Source {
            field: field.to_string(),
            path: source.clone(),
            source: e,
        })?;
        return Ok(MountStep {
            field: field.to_string(),
            destination: destination_c,
            kind: MountKind::Bind {
                source: cstring(&format!("{field}.source"), &source)?,
                recursive,
            },
            flags,
            data: None,
            propagation,
            recursive_attr,
            copy_up: false,
            create: if meta.is_dir() {
                Create::Dir
            } else {
                Create::File
            },
        });
    }

    if fstype.is_empty() {
        return Err(invalid(
            format!("{field}.type"),
            "missing (and the mount is not a bind mount)",
        ));
    }
    if let Some(words) = fs_words(fstype)
        && let Some(o) = data.iter().find(|o| !o.contains('=') && !words.contains(o))
    {
        return Err(invalid(&opt_field, format!("unknown mount option {o:?}")));
    }
    let source = m
        .source()
        .as_ref()
        .map(|s| s.as_os_str().as_bytes().to_vec())
        .unwrap_or_else(|| fstype.as_bytes().to_vec());
    let mut data = data.join(",");
    if let Some(l) = label
        && matches!(fstype, "tmpfs" | "devpts" | "mqueue")
    {
        if !data.is_empty() {
            data.push(',');
        }
        data.push_str(l);
    }
    let data_c = if data.is_empty() {
        None
    } else {
        Some(cstr(&opt_field, &data)?)
    };
    let source_c = CString::new(source)
        .map_err(|_| invalid(format!("{field}.source"), "contains a NUL byte"))?;

    let kind = match fstype {
        "sysfs" if opts.in_user_namespace && !new_netns => {
            // sysfs cannot be mounted in a user namespace that does not own its network
            // namespace: bind the host's /sys recursively instead (runc and crun do the
            // same), read-only all the way down when asked to be read-only.
            let recursive_attr = if flags & libc::MS_RDONLY != 0 {
                let (set, clear) = recursive_attr.unwrap_or((0, 0));
                Some((
                    set | sys::MOUNT_ATTR_RDONLY,
                    clear & !sys::MOUNT_ATTR_RDONLY,
                ))
            } else {
                recursive_attr
            };
            return Ok(MountStep {
                field: field.to_string(),
                destination: destination_c,
                kind: MountKind::Bind {
                    source: c"/sys".to_owned(),
                    recursive: true,
                },
                flags,
                data: None,
                propagation,
                recursive_attr,
                copy_up: false,
                create: Create::Dir,
            });
        }
        "mqueue" if opts.in_user_namespace && host_ipcns => {
            // Only the user namespace owning an ipc namespace may mount its mqueue, and
            // the host's is not the container's: bind the host's /dev/mqueue instead.
            if !host.mqueue {
                return Err(invalid(
                    field,
                    "mqueue cannot be mounted in a user namespace sharing the host's ipc namespace, and the host has no /dev/mqueue to bind: add {\"type\": \"ipc\"} to linux.namespaces",
                ));
            }
            return Ok(MountStep {
                field: field.to_string(),
                destination: destination_c,
                kind: MountKind::Bind {
                    source: c"/dev/mqueue".to_owned(),
                    recursive: false,
                },
                flags,
                data: None,
                propagation,
                recursive_attr,
                copy_up: false,
                create: Create::Dir,
            });
        }
        "cgroup" if !host.cgroup2_only => MountKind::CgroupV1 {
            hierarchies: host
                .hierarchies
                .iter()
                .map(|h| {
                    let target = destination.join(std::ffi::OsStr::from_bytes(h.name.as_bytes()));
                    Ok(Hierarchy {
                        fresh: new_cgroupns,
                        target: cstring(&dest_field, &target)?,
                        ..h.clone()
                    })
                })
                .collect::<Result<_, RootfsError>>()?,
        },
        "cgroup" | "cgroup2" => MountKind::Cgroup2 { source: source_c },
        _ => MountKind::Fs {
            fstype: cstr(&format!("{field}.type"), fstype)?,
            source: source_c,
        },
    };
    Ok(MountStep {
        field: field.to_string(),
        destination: destination_c,
        kind,
        flags,
        data: data_c,
        propagation,
        recursive_attr,
        copy_up,
        create: Create::Dir,
    })
}

/// Files under /proc that may be mounted over (lxcfs and cella-procfs provide per-container
/// views of them); runc allows the same list.
const PROC_OVERLAYS: [&str; 10] = [
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// Nothing but procfs goes on /proc, and under /proc only the allowed per-container
/// views or binds of procfs itself: a mount hiding e.g. /proc/self/attr would defeat
/// LSM confinement (runc CVE-2019-16884). Checked on the clean destination.
fn check_proc_destination(
    field: &str,
    dest: &Path,
    fstype: &str,
    bind: bool,
    source: Option<&Path>,
) -> Result<(), RootfsError> {
    if dest == Path::new("/proc") {
        if fstype == "proc" && !bind {
            return Ok(());
        }
        return Err(invalid(field, "/proc can only be a mount of type \"proc\""));
    }
    if !dest.starts_with("/proc") {
        return Ok(());
    }
    let allowed = PROC_OVERLAYS.iter().any(|p| dest == Path::new(p))
        || (bind && source.is_some_and(|s| s.starts_with("/proc")))
        || (fstype == "proc" && !bind);
    if allowed {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{dest:?} is inside /proc and not one of the files that may be mounted over"),
        ))
    }
}

fn plan_devices(
    plan: &mut RootfsPlan,
    devices: Option<&Vec<oci_spec::runtime::LinuxDevice>>,
) -> Result<(), RootfsError> {
    let mut steps: Vec<DeviceStep> = Vec::new();
    for (i, d) in devices.into_iter().flatten().enumerate() {
        let field = format!("linux.devices[{i}]");
        let path_field = format!("{field}.path");
        let clean = clean_absolute(d.path()).ok_or_else(|| {
            invalid(
                &path_field,
                format!("{:?} is not an absolute path", d.path()),
            )
        })?;
        if clean == Path::new("/") {
            return Err(invalid(&path_field, "\"/\" is not a device path"));
        }
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(invalid(
                    format!("{field}.type"),
                    "\"a\" is not a device node type (want c, b, u or p)",
                ));
            }
        };
        let (major, minor) = if kind == libc::S_IFIFO {
            (0, 0)
        } else {
            let major = u32::try_from(d.major()).map_err(|_| {
                invalid(
                    format!("{field}.major"),
                    format!("{} is out of range", d.major()),
                )
            })?;
            let minor = u32::try_from(d.minor()).map_err(|_| {
                invalid(
                    format!("{field}.minor"),
                    format!("{} is out of range", d.minor()),
                )
            })?;
            (major, minor)
        };
        let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
        steps.push(device_step(
            field,
            &clean,
            kind | mode,
            libc::makedev(major, minor),
            d.uid().unwrap_or(0),
            d.gid().unwrap_or(0),
        )?);
    }
    for (path, major, minor) in DEFAULT_DEVICES {
        if steps.iter().any(|s| s.path.as_bytes() == path.as_bytes()) {
            continue;
        }
        steps.push(device_step(
            "default device".to_string(),
            Path::new(path),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
            0,
            0,
        )?);
    }
    plan.devices = steps;
    Ok(())
}

fn device_step(
    field: String,
    path: &Path,
    mode: u32,
    dev: u64,
    uid: u32,
    gid: u32,
) -> Result<DeviceStep, RootfsError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default();
    Ok(DeviceStep {
        path: cstring(&field, path)?,
        dir: cstring(&field, dir)?,
        name: cstring(&field, Path::new(name))?,
        field,
        mode,
        dev,
        uid,
        gid,
    })
}

#[cfg(test)]
mod tests;
