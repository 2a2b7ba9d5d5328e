//! Order of kernel calls, checked with a recording double (no root needed).

use super::*;
use crate::rootfs::plan::{DeviceStep, PathStep};
use std::ffi::CString;

/// Records every call as a line; nodes are the resolved paths, shown as `fd:<path>`.
#[derive(Default)]
struct Recorder {
    log: Vec<String>,
    /// Paths whose resolution reports an escape through the given symlink.
    escapes: Vec<(String, String)>,
    /// Paths that do not exist (only matters with Create::Nothing).
    missing: Vec<String>,
    /// Mount targets that fail with ENOTDIR when bound over (masked directories).
    dirs: Vec<String>,
    /// What statvfs reports.
    flags: c_ulong,
    /// /proc/self/cgroup.
    cgroup: String,
    /// Mounts of this filesystem type fail with EPERM.
    refuse_fstype: Option<&'static str>,
}

fn flag_names(f: c_ulong) -> String {
    const NAMES: [(c_ulong, &str); 17] = [
        (libc::MS_RDONLY, "RDONLY"),
        (libc::MS_NOSUID, "NOSUID"),
        (libc::MS_NODEV, "NODEV"),
        (libc::MS_NOEXEC, "NOEXEC"),
        (libc::MS_REMOUNT, "REMOUNT"),
        (libc::MS_BIND, "BIND"),
        (libc::MS_MOVE, "MOVE"),
        (libc::MS_REC, "REC"),
        (libc::MS_PRIVATE, "PRIVATE"),
        (libc::MS_SLAVE, "SLAVE"),
        (libc::MS_SHARED, "SHARED"),
        (libc::MS_UNBINDABLE, "UNBINDABLE"),
        (libc::MS_STRICTATIME, "STRICTATIME"),
        (libc::MS_RELATIME, "RELATIME"),
        (libc::MS_NOATIME, "NOATIME"),
        (libc::MS_NODIRATIME, "NODIRATIME"),
        (libc::MS_SYNCHRONOUS, "SYNC"),
    ];
    let v: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        "0".into()
    } else {
        v.join("|")
    }
}

fn show(t: Target<'_, String>) -> String {
    match t {
        Target::Path(p) => p.to_string_lossy().into_owned(),
        Target::Node(n) => format!("fd:{n}"),
    }
}

impl MountSys for Recorder {
    type Node = String;

    fn resolve(
        &mut self,
        root: &CStr,
        path: &CStr,
        create: Create,
    ) -> Result<String, ResolveError> {
        let p = path.to_string_lossy().into_owned();
        if let Some((_, link)) = self.escapes.iter().find(|(e, _)| *e == p) {
            return Err(ResolveError::Escape { link: link.clone() });
        }
        if create == Create::Nothing && self.missing.contains(&p) {
            return Err(ResolveError::Io {
                op: "open",
                path: p,
                source: io::Error::from_raw_os_error(libc::ENOENT),
            });
        }
        let root = root.to_string_lossy();
        Ok(if root == "/" { p } else { format!("{root}{p}") })
    }

    fn mount(
        &mut self,
        source: Option<Target<'_, String>>,
        target: Target<'_, String>,
        fstype: Option<&CStr>,
        flags: c_ulong,
        data: Option<&CStr>,
    ) -> io::Result<()> {
        if let Target::Node(n) = target
            && flags & libc::MS_BIND != 0
            && flags & libc::MS_REMOUNT == 0
            && self.dirs.iter().any(|d| n.ends_with(d.as_str()))
            && source.is_some_and(|s| show(s) == "/dev/null")
        {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        if fstype.is_some_and(|t| Some(t.to_str().unwrap()) == self.refuse_fstype) {
            self.log.push(format!("mount {} EPERM", show(target)));
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let mut line = format!(
            "mount {} {} {} {}",
            source.map_or("-".into(), show),
            show(target),
            fstype.map_or("-".into(), |t| t.to_string_lossy().into_owned()),
            flag_names(flags)
        );
        if let Some(d) = data {
            line.push(' ');
            line.push_str(&d.to_string_lossy());
        }
        self.log.push(line);
        Ok(())
    }

    fn copy_up(&mut self, lower: &String, upper: &String) -> io::Result<()> {
        self.log.push(format!("copy_up fd:{lower} -> fd:{upper}"));
        Ok(())
    }

    fn mount_setattr(&mut self, target: &String, set: u64, clear: u64) -> io::Result<()> {
        self.log.push(format!(
            "mount_setattr fd:{target} set={set:#x} clear={clear:#x}"
        ));
        Ok(())
    }

    fn mount_flags(&mut self, target: Target<'_, String>) -> io::Result<c_ulong> {
        self.log.push(format!("statvfs {}", show(target)));
        Ok(self.flags)
    }

    fn mknod(&mut self, dir: &String, name: &CStr, mode: u32, dev: u64) -> io::Result<()> {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFCHR => "c",
            libc::S_IFBLK => "b",
            libc::S_IFIFO => "p",
            _ => "?",
        };
        self.log.push(format!(
            "mknod fd:{dir} {} {kind} {}:{} {:o}",
            name.to_string_lossy(),
            libc::major(dev),
            libc::minor(dev),
            mode & 0o7777
        ));
        Ok(())
    }

    fn chown(&mut self, dir: &String, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
        self.log.push(format!(
            "chown fd:{dir} {} {uid}:{gid}",
            name.to_string_lossy()
        ));
        Ok(())
    }

    fn symlink(&mut self, dir: &String, name: &CStr, target: &CStr) -> io::Result<()> {
        self.log.push(format!(
            "symlink fd:{dir} {} -> {}",
            name.to_string_lossy(),
            target.to_string_lossy()
        ));
        Ok(())
    }

    fn unlink(&mut self, dir: &String, name: &CStr) -> io::Result<()> {
        self.log
            .push(format!("unlink fd:{dir} {}", name.to_string_lossy()));
        Err(io::Error::from_raw_os_error(libc::ENOENT))
    }

    fn pivot_root(&mut self, new_root: &CStr, put_old: &CStr) -> io::Result<()> {
        self.log
            .push(format!("pivot_root {new_root:?} {put_old:?}"));
        Ok(())
    }

    fn umount(&mut self, target: &CStr, flags: c_int) -> io::Result<()> {
        self.log.push(format!("umount {target:?} {flags}"));
        Ok(())
    }

    fn chdir(&mut self, path: &CStr) -> io::Result<()> {
        self.log.push(format!("chdir {}", path.to_string_lossy()));
        Ok(())
    }

    fn open_dir(&mut self, path: &CStr) -> io::Result<String> {
        self.log.push(format!("open {}", path.to_string_lossy()));
        Ok(path.to_string_lossy().into_owned())
    }

    fn fchdir(&mut self, dir: &String) -> io::Result<()> {
        self.log.push(format!("fchdir fd:{dir}"));
        Ok(())
    }

    fn chroot(&mut self, path: &CStr) -> io::Result<()> {
        self.log.push(format!("chroot {}", path.to_string_lossy()));
        Ok(())
    }

    fn read_file(&mut self, path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
        self.log.push(format!("read {}", path.to_string_lossy()));
        let b = self.cgroup.as_bytes();
        buf[..b.len()].copy_from_slice(b);
        Ok(b.len())
    }
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn empty_plan() -> RootfsPlan {
    RootfsPlan {
        rootfs: c("/b/rootfs"),
        new_mount_ns: true,
        in_userns: false,
        no_pivot: false,
        root_propagation: libc::MS_SLAVE | libc::MS_REC,
        final_propagation: None,
        parent_private: None,
        mounts: Vec::new(),
        setup_dev: false,
        devices: Vec::new(),
        dev_symlinks: Vec::new(),
        readonly_paths: Vec::new(),
        masked_paths: Vec::new(),
        mask_dir_data: None,
        readonly_root: false,
    }
}

fn fs_mount(
    field: &str,
    dest: &str,
    fstype: &str,
    flags: c_ulong,
    data: Option<&str>,
) -> MountStep {
    MountStep {
        field: field.into(),
        destination: c(dest),
        kind: MountKind::Fs {
            fstype: c(fstype),
            source: c(fstype),
        },
        flags,
        data: data.map(c),
        propagation: Vec::new(),
        recursive_attr: None,
        copy_up: false,
        create: Create::Dir,
    }
}

#[test]
fn mount_all_order() {
    let mut plan = empty_plan();
    plan.mounts
        .push(fs_mount("mounts[0]", "/proc", "proc", 0, None));
    plan.mounts.push(fs_mount(
        "mounts[1]",
        "/dev",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    ));
    plan.mounts.push(MountStep {
        field: "mounts[2]".into(),
        destination: c("/data"),
        kind: MountKind::Bind {
            source: c("/host/data"),
            recursive: true,
        },
        flags: libc::MS_RDONLY | libc::MS_NOSUID,
        data: None,
        propagation: vec![libc::MS_SHARED, libc::MS_UNBINDABLE | libc::MS_REC],
        recursive_attr: Some((sys::MOUNT_ATTR_RDONLY, sys::MOUNT_ATTR_NOEXEC)),
        copy_up: false,
        create: Create::Dir,
    });
    let mut run = fs_mount("mounts[3]", "/run", "tmpfs", 0, None);
    run.copy_up = true;
    plan.mounts.push(run);
    plan.setup_dev = true;
    plan.devices.push(DeviceStep {
        field: "default device".into(),
        path: c("/dev/null"),
        dir: c("/dev"),
        name: c("null"),
        mode: libc::S_IFCHR | 0o666,
        dev: libc::makedev(1, 3),
        uid: 0,
        gid: 0,
    });
    plan.dev_symlinks.push((c("fd"), c("/proc/self/fd")));
    let mut r = Recorder::default();
    mount_all(&plan, &mut r).unwrap();
    assert_eq!(
        r.log,
        [
            "mount - / - REC|SLAVE",
            "mount /b/rootfs /b/rootfs - BIND|REC",
            "mount proc fd:/b/rootfs/proc proc 0",
            "mount tmpfs fd:/b/rootfs/dev tmpfs NOSUID|STRICTATIME mode=755,size=65536k",
            "mount /host/data fd:/b/rootfs/data - BIND|REC",
            // Outside a user namespace the remount uses the config's flags as they are.
            "mount - fd:/b/rootfs/data - RDONLY|NOSUID|REMOUNT|BIND",
            "mount_setattr fd:/b/rootfs/data set=0x1 clear=0x8",
            "mount - fd:/b/rootfs/data - SHARED",
            "mount - fd:/b/rootfs/data - REC|UNBINDABLE",
            "mount tmpfs fd:/b/rootfs/run tmpfs 0",
            "copy_up fd:/b/rootfs/run -> fd:/b/rootfs/run",
            "mknod fd:/b/rootfs/dev null c 1:3 666",
            "chown fd:/b/rootfs/dev null 0:0",
            "symlink fd:/b/rootfs/dev fd -> /proc/self/fd",
            "unlink fd:/b/rootfs/dev ptmx",
            "symlink fd:/b/rootfs/dev ptmx -> pts/ptmx",
        ]
    );
}

#[test]
fn user_namespace_binds_devices_and_keeps_locked_flags() {
    let mut plan = empty_plan();
    plan.in_userns = true;
    plan.mounts.push(MountStep {
        field: "mounts[0]".into(),
        destination: c("/etc/hosts"),
        kind: MountKind::Bind {
            source: c("/b/hosts"),
            recursive: false,
        },
        flags: libc::MS_RDONLY,
        data: None,
        propagation: Vec::new(),
        recursive_attr: None,
        copy_up: false,
        create: Create::File,
    });
    plan.setup_dev = true;
    plan.devices.push(DeviceStep {
        field: "default device".into(),
        path: c("/dev/tty"),
        dir: c("/dev"),
        name: c("tty"),
        mode: libc::S_IFCHR | 0o666,
        dev: libc::makedev(5, 0),
        uid: 0,
        gid: 0,
    });
    let mut r = Recorder {
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RELATIME | libc::MS_SYNCHRONOUS,
        ..Recorder::default()
    };
    mount_all(&plan, &mut r).unwrap();
    assert_eq!(
        &r.log[2..6],
        [
            "mount /b/hosts fd:/b/rootfs/etc/hosts - BIND",
            "statvfs fd:/b/rootfs/etc/hosts",
            // nosuid/nodev/relatime are kept (locked in a user namespace), sync is not.
            "mount - fd:/b/rootfs/etc/hosts - RDONLY|NOSUID|NODEV|REMOUNT|BIND|RELATIME",
            "mount /dev/tty fd:/b/rootfs/dev/tty - BIND",
        ]
    );
    assert!(!r.log.iter().any(|l| l.starts_with("mknod")));
}

#[test]
fn escaping_destination_stops_before_mounting() {
    let mut plan = empty_plan();
    plan.mounts
        .push(fs_mount("mounts[0]", "/proc", "proc", 0, None));
    plan.mounts
        .push(fs_mount("mounts[1]", "/escape/x", "tmpfs", 0, None));
    plan.mounts
        .push(fs_mount("mounts[2]", "/after", "tmpfs", 0, None));
    let mut r = Recorder {
        escapes: vec![("/escape/x".into(), "/escape".into())],
        ..Recorder::default()
    };
    let e = mount_all(&plan, &mut r).unwrap_err();
    assert_eq!(
        e.to_string(),
        "mounts[1].destination: \"/escape/x\" goes through symlink \"/escape\" which points outside the rootfs"
    );
    assert_eq!(
        r.log.len(),
        3,
        "nothing mounted after the escape: {:?}",
        r.log
    );
}

#[test]
fn cgroup_v1_binds_own_cgroups_read_only() {
    let mut plan = empty_plan();
    let h = |name: &str, key: &str, links: &[&str]| Hierarchy {
        name: c(name),
        host_mount: format!("/sys/fs/cgroup/{name}").into_bytes(),
        key: key.as_bytes().to_vec(),
        data: None,
        fstype: c("cgroup"),
        links: links.iter().map(|l| c(l)).collect(),
        fresh: false,
        target: c(&format!("/sys/fs/cgroup/{name}")),
    };
    plan.mounts.push(MountStep {
        field: "mounts[0]".into(),
        destination: c("/sys/fs/cgroup"),
        kind: MountKind::CgroupV1 {
            hierarchies: vec![
                h("cpu,cpuacct", "cpu,cpuacct", &["cpu", "cpuacct"]),
                h("memory", "memory", &[]),
                h("net_cls", "net_cls", &[]),
            ],
        },
        flags: libc::MS_RDONLY | libc::MS_NOSUID,
        data: None,
        propagation: Vec::new(),
        recursive_attr: None,
        copy_up: false,
        create: Create::Dir,
    });
    let mut r = Recorder {
        cgroup: "5:memory:/ctr\n4:cpuacct,cpu:/ctr/x\n0::/ctr\n".into(),
        ..Recorder::default()
    };
    mount_all(&plan, &mut r).unwrap();
    assert_eq!(
        &r.log[2..],
        [
            "mount tmpfs fd:/b/rootfs/sys/fs/cgroup tmpfs NOSUID mode=755",
            "read /proc/self/cgroup",
            "mount /sys/fs/cgroup/cpu,cpuacct/ctr/x fd:/b/rootfs/sys/fs/cgroup/cpu,cpuacct - BIND|REC",
            "mount - fd:/b/rootfs/sys/fs/cgroup/cpu,cpuacct - RDONLY|NOSUID|NODEV|NOEXEC|REMOUNT|BIND",
            "symlink fd:/b/rootfs/sys/fs/cgroup cpu -> cpu,cpuacct",
            "symlink fd:/b/rootfs/sys/fs/cgroup cpuacct -> cpu,cpuacct",
            "mount /sys/fs/cgroup/memory/ctr fd:/b/rootfs/sys/fs/cgroup/memory - BIND|REC",
            "mount - fd:/b/rootfs/sys/fs/cgroup/memory - RDONLY|NOSUID|NODEV|NOEXEC|REMOUNT|BIND",
            // net_cls: the init is not in that hierarchy, so it is left out.
            "mount - fd:/b/rootfs/sys/fs/cgroup - RDONLY|NOSUID|REMOUNT mode=755",
        ]
    );
}

#[test]
fn cgroup2_in_a_user_namespace_falls_back_to_a_bind_of_its_own_cgroup() {
    let mut plan = empty_plan();
    plan.in_userns = true;
    plan.mounts.push(MountStep {
        field: "mounts[0]".into(),
        destination: c("/sys/fs/cgroup"),
        kind: MountKind::Cgroup2 {
            source: c("cgroup"),
        },
        flags: libc::MS_RDONLY | libc::MS_NOEXEC,
        data: None,
        propagation: Vec::new(),
        recursive_attr: None,
        copy_up: false,
        create: Create::Dir,
    });
    let mut r = Recorder {
        refuse_fstype: Some("cgroup2"),
        cgroup: "0::/user.slice/ctr\n".into(),
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        ..Recorder::default()
    };
    mount_all(&plan, &mut r).unwrap();
    assert_eq!(
        &r.log[2..],
        [
            "mount fd:/b/rootfs/sys/fs/cgroup EPERM",
            "read /proc/self/cgroup",
            "mount /sys/fs/cgroup/user.slice/ctr fd:/b/rootfs/sys/fs/cgroup - BIND|REC",
            "statvfs fd:/b/rootfs/sys/fs/cgroup",
            "mount - fd:/b/rootfs/sys/fs/cgroup - RDONLY|NOSUID|NODEV|NOEXEC|REMOUNT|BIND",
        ]
    );
    // Outside a user namespace the error is reported, naming the mount.
    plan.in_userns = false;
    let mut r = Recorder {
        refuse_fstype: Some("cgroup2"),
        ..Recorder::default()
    };
    let e = mount_all(&plan, &mut r).unwrap_err();
    assert_eq!(e.to_string(), "mounts[0]: mount `/sys/fs/cgroup`");
}

#[test]
fn pivot_order() {
    let mut plan = empty_plan();
    plan.final_propagation = Some(libc::MS_PRIVATE | libc::MS_REC);
    let mut r = Recorder::default();
    pivot(&plan, &mut r).unwrap();
    assert_eq!(
        r.log,
        [
            "open /",
            "chdir /b/rootfs",
            "pivot_root \".\" \".\"",
            "fchdir fd:/",
            "mount - . - REC|SLAVE",
            "umount \".\" 2",
            "chdir /",
            "mount - / - REC|PRIVATE",
        ]
    );
    plan.no_pivot = true;
    plan.final_propagation = None;
    let mut r = Recorder::default();
    pivot(&plan, &mut r).unwrap();
    assert_eq!(
        r.log,
        [
            "chdir /b/rootfs",
            "mount /b/rootfs / - MOVE",
            "chroot .",
            "chdir /",
        ]
    );
}

#[test]
fn finish_order() {
    let mut plan = empty_plan();
    let p = |f: &str, path: &str| PathStep {
        field: f.into(),
        path: c(path),
    };
    plan.readonly_paths = vec![
        p("linux.readonlyPaths[0]", "/proc/sys"),
        p("linux.readonlyPaths[1]", "/proc/gone"),
    ];
    plan.masked_paths = vec![
        p("linux.maskedPaths[0]", "/proc/kcore"),
        p("linux.maskedPaths[1]", "/proc/acpi"),
        p("linux.maskedPaths[2]", "/proc/missing"),
    ];
    plan.readonly_root = true;
    let mut r = Recorder {
        missing: vec!["/proc/gone".into(), "/proc/missing".into()],
        dirs: vec!["/proc/acpi".into()],
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RELATIME,
        ..Recorder::default()
    };
    finish(&plan, &mut r).unwrap();
    assert_eq!(
        r.log,
        [
            "mount fd:/proc/sys fd:/proc/sys - BIND|REC",
            "statvfs fd:/proc/sys",
            "mount - fd:/proc/sys - RDONLY|NOSUID|NODEV|NOEXEC|REMOUNT|BIND|RELATIME",
            "mount /dev/null fd:/proc/kcore - BIND",
            "mount tmpfs fd:/proc/acpi tmpfs RDONLY",
            "statvfs /",
            "mount - / - RDONLY|NOSUID|NODEV|NOEXEC|REMOUNT|BIND|RELATIME",
        ]
    );
}

#[test]
fn console_is_bound_over_dev_console() {
    let plan = empty_plan();
    let mut r = Recorder::default();
    mount_console(&plan, c"/dev/pts/3", &mut r).unwrap();
    assert_eq!(r.log, ["mount /dev/pts/3 fd:/b/rootfs/dev/console - BIND"]);
}

#[test]
fn no_mount_namespace_only_chroots() {
    let mut plan = empty_plan();
    plan.new_mount_ns = false;
    let mut r = Recorder::default();
    mount_all(&plan, &mut r).unwrap();
    pivot(&plan, &mut r).unwrap();
    assert_eq!(r.log, ["chroot /b/rootfs", "chdir /"]);
}

#[test]
fn own_cgroup_matches_controller_sets() {
    let c = b"12:cpu,cpuacct:/a\n1:name=systemd:/s\n0::/u\n";
    assert_eq!(own_cgroup(c, b"cpuacct,cpu"), Some(&b"/a"[..]));
    assert_eq!(own_cgroup(c, b"name=systemd"), Some(&b"/s"[..]));
    assert_eq!(own_cgroup(c, b""), Some(&b"/u"[..]));
    assert_eq!(own_cgroup(c, b"cpu"), None);
}
