//! The plan as data: flags, data strings and validation errors, without root.

use super::*;
use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A bundle directory with an empty rootfs, removed on drop.
struct TestBundle(PathBuf);

impl TestBundle {
    fn new() -> TestBundle {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cella-plan-{}-{n}", std::process::id()));
        fs::create_dir_all(dir.join("rootfs")).unwrap();
        TestBundle(dir)
    }

    fn spec(&self, json: &str) -> Spec {
        let p = self.0.join("config.json");
        fs::write(&p, json).unwrap();
        Spec::load(&p).unwrap()
    }
}

impl Drop for TestBundle {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn opts() -> RootfsOptions {
    RootfsOptions {
        no_pivot: false,
        in_user_namespace: false,
        new_mount_namespace: true,
    }
}

fn config(mounts: &str, linux: &str) -> String {
    format!(
        r#"{{"ociVersion":"1.2.0","root":{{"path":"rootfs","readonly":true}},
        "mounts":[{mounts}],
        "linux":{{"namespaces":[{{"type":"mount"}},{{"type":"pid"}}]{linux}}}}}"#
    )
}

fn plan_of(
    b: &TestBundle,
    mounts: &str,
    linux: &str,
    host: &HostFacts,
) -> Result<RootfsPlan, RootfsError> {
    plan(&b.spec(&config(mounts, linux)), &b.0, opts(), host)
}

fn err_of(mounts: &str, linux: &str) -> String {
    let b = TestBundle::new();
    plan_of(&b, mounts, linux, &HostFacts::default())
        .expect_err("expected a validation error")
        .to_string()
}

#[test]
fn default_mounts_get_runc_flags_and_data() {
    let b = TestBundle::new();
    let p = plan_of(
        &b,
        r#"{"destination":"/proc","type":"proc","source":"proc"},
        {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]},
        {"destination":"/dev/pts","type":"devpts","source":"devpts","options":["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620","gid=5"]},
        {"destination":"/dev/shm","type":"tmpfs","source":"shm","options":["nosuid","noexec","nodev","mode=1777","size=65536k"]},
        {"destination":"/dev/mqueue","type":"mqueue","source":"mqueue","options":["nosuid","noexec","nodev"]},
        {"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","noexec","nodev","ro"]}"#,
        "",
        &HostFacts::default(),
    )
    .unwrap();
    let m = &p.mounts;
    assert_eq!(m.len(), 6);
    assert_eq!(m[0].destination.as_bytes(), b"/proc");
    assert!(
        matches!(&m[0].kind, MountKind::Fs { fstype, source } if fstype.as_bytes() == b"proc" && source.as_bytes() == b"proc")
    );
    assert_eq!(m[0].flags, 0);
    assert_eq!(m[0].data, None);
    assert_eq!(m[1].flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
    assert_eq!(m[1].data.as_deref(), Some(c"mode=755,size=65536k"));
    assert_eq!(m[2].flags, libc::MS_NOSUID | libc::MS_NOEXEC);
    assert_eq!(
        m[2].data.as_deref(),
        Some(c"newinstance,ptmxmode=0666,mode=0620,gid=5")
    );
    assert_eq!(
        m[4].flags,
        libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV
    );
    assert_eq!(
        m[5].flags,
        libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV | libc::MS_RDONLY
    );
    assert!(
        m.iter()
            .all(|m| m.create == Create::Dir && m.propagation.is_empty())
    );
    assert!(p.setup_dev);
    assert!(p.readonly_root);
    assert_eq!(p.root_propagation, libc::MS_SLAVE | libc::MS_REC);
    assert_eq!(p.final_propagation, None);
    // Default devices, in runc's order, mode 0666, root-owned.
    let devs: Vec<_> = p.devices.iter().map(|d| d.path.to_str().unwrap()).collect();
    assert_eq!(
        devs,
        [
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/random",
            "/dev/urandom",
            "/dev/tty"
        ]
    );
    assert_eq!(p.devices[0].mode, libc::S_IFCHR | 0o666);
    assert_eq!(p.devices[0].dev, libc::makedev(1, 3));
    assert_eq!(p.devices[5].dev, libc::makedev(5, 0));
    assert_eq!(p.devices[0].dir.as_bytes(), b"/dev");
    assert_eq!(p.devices[0].name.as_bytes(), b"null");
    let links: Vec<_> = p
        .dev_symlinks
        .iter()
        .map(|(n, t)| (n.to_str().unwrap(), t.to_str().unwrap()))
        .collect();
    assert_eq!(
        links,
        [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2")
        ]
    );
}

#[test]
fn flag_words_set_and_clear_in_order() {
    let b = TestBundle::new();
    let p = plan_of(
        &b,
        r#"{"destination":"/a","type":"tmpfs","source":"tmpfs","options":["ro","rw","nosuid","suid","nodev","noexec","exec","sync","async","dirsync","mand","noatime","nodiratime","relatime","norelatime","strictatime","remount"]}"#,
        "",
        &HostFacts::default(),
    )
    .unwrap();
    assert_eq!(
        p.mounts[0].flags,
        libc::MS_NODEV
            | libc::MS_DIRSYNC
            | libc::MS_MANDLOCK
            | libc::MS_NOATIME
            | libc::MS_NODIRATIME
            | libc::MS_STRICTATIME
            | libc::MS_REMOUNT
    );
}

#[test]
fn bind_mounts_resolve_relative_sources_and_pick_file_or_dir() {
    let b = TestBundle::new();
    fs::create_dir_all(b.0.join("data")).unwrap();
    fs::write(b.0.join("hosts"), "").unwrap();
    let p = plan_of(
        &b,
        r#"{"destination":"/data","type":"bind","source":"data","options":["rbind","ro","nosuid","rslave","unbindable"]},
        {"destination":"/etc/hosts","source":"hosts","options":["bind"]}"#,
        "",
        &HostFacts::default(),
    )
    .unwrap();
    let m = &p.mounts;
    match &m[0].kind {
        MountKind::Bind { source, recursive } => {
            assert_eq!(source.to_str().unwrap(), b.0.join("data").to_str().unwrap());
            assert!(*recursive);
        }
        k => panic!("not a bind: {k:?}"),
    }
    assert_eq!(m[0].flags, libc::MS_RDONLY | libc::MS_NOSUID);
    assert_eq!(
        m[0].propagation,
        [libc::MS_SLAVE | libc::MS_REC, libc::MS_UNBINDABLE]
    );
    assert_eq!(m[0].create, Create::Dir);
    assert!(matches!(
        m[1].kind,
        MountKind::Bind {
            recursive: false,
            ..
        }
    ));
    assert_eq!(m[1].create, Create::File);
}

#[test]
fn validation_errors_name_the_field() {
    assert_eq!(
        err_of(r#"{"destination":"proc","type":"proc"}"#, ""),
        "mounts[0].destination: \"proc\" is not an absolute path"
    );
    assert_eq!(
        err_of(
            r#"{"destination":"/proc","type":"proc"},{"destination":"/x","type":"tmpfs","options":["nosuid","bogus"]}"#,
            ""
        ),
        "mounts[1].options: unknown mount option \"bogus\""
    );
    assert_eq!(
        err_of(
            r#"{"destination":"/x","type":"bind","source":"/x","options":["size=1"]}"#,
            ""
        ),
        "mounts[0].options: unknown mount option \"size=1\""
    );
    let e = err_of(
        r#"{"destination":"/x","type":"bind","source":"/nonexistent-cella-src"}"#,
        "",
    );
    assert_eq!(e, "mounts[0].source: `/nonexistent-cella-src`");
    assert_eq!(
        err_of("", r#","rootfsPropagation":"sideways""#),
        "linux.rootfsPropagation: unknown propagation \"sideways\" (want private, shared, slave, unbindable or their r-variants)"
    );
    assert_eq!(
        err_of(
            r#"{"destination":"/x","type":"tmpfs","options":["idmap"]}"#,
            ""
        ),
        "mounts[0].options: \"idmap\": id-mapped mounts are not supported"
    );
    assert_eq!(
        err_of(
            "",
            r#","devices":[{"path":"dev/foo","type":"c","major":1,"minor":3}]"#
        ),
        "linux.devices[0].path: \"dev/foo\" is not an absolute path"
    );
    assert_eq!(
        err_of("", r#","maskedPaths":["proc/kcore"]"#),
        "linux.maskedPaths[0]: \"proc/kcore\" is not an absolute path"
    );
    assert_eq!(
        err_of(r#"{"destination":"/..","type":"tmpfs"}"#, ""),
        "mounts[0].destination: cannot mount over the rootfs root"
    );
}

#[test]
fn missing_rootfs_names_root_path_with_the_os_error() {
    let b = TestBundle::new();
    fs::remove_dir(b.0.join("rootfs")).unwrap();
    let e = plan_of(&b, "", "", &HostFacts::default()).unwrap_err();
    let source = std::error::Error::source(&e).unwrap().to_string();
    assert_eq!(
        format!("{e}: {source}"),
        format!(
            "root.path: `{}`: No such file or directory (os error 2)",
            b.0.join("rootfs").display()
        )
    );
}

#[test]
fn destinations_are_cleaned() {
    let b = TestBundle::new();
    let p = plan_of(
        &b,
        r#"{"destination":"/a/./b//../c/","type":"tmpfs"},{"destination":"/../../etc","type":"tmpfs"}"#,
        "",
        &HostFacts::default(),
    )
    .unwrap();
    assert_eq!(p.mounts[0].destination.as_bytes(), b"/a/c");
    assert_eq!(p.mounts[1].destination.as_bytes(), b"/etc");
    // No source: the type is used, as runc does.
    assert!(
        matches!(&p.mounts[0].kind, MountKind::Fs { source, .. } if source.as_bytes() == b"tmpfs")
    );
}

#[test]
fn linux_devices_replace_defaults_and_carry_mode_and_owner() {
    let b = TestBundle::new();
    let p = plan_of(
        &b,
        "",
        r#","devices":[{"path":"/dev/null","type":"c","major":1,"minor":3,"fileMode":384,"uid":7,"gid":8},
        {"path":"/dev/sub/fifo","type":"p"},{"path":"/dev/loop9","type":"b","major":7,"minor":9}]"#,
        &HostFacts::default(),
    )
    .unwrap();
    let null = &p.devices[0];
    assert_eq!(null.mode, libc::S_IFCHR | 0o600);
    assert_eq!((null.uid, null.gid), (7, 8));
    assert_eq!(p.devices[1].mode, libc::S_IFIFO | 0o666);
    assert_eq!(p.devices[1].dir.as_bytes(), b"/dev/sub");
    assert_eq!(p.devices[2].mode, libc::S_IFBLK | 0o666);
    assert_eq!(p.devices[2].dev, libc::makedev(7, 9));
    let nulls = p
        .devices
        .iter()
        .filter(|d| d.path.as_bytes() == b"/dev/null")
        .count();
    assert_eq!(nulls, 1, "the config's /dev/null replaces the default one");
    assert_eq!(p.devices.len(), 3 + 5);
}

#[test]
fn bind_mounted_dev_skips_device_setup() {
    let b = TestBundle::new();
    let p = plan_of(
        &b,
        r#"{"destination":"/dev","type":"bind","source":"/dev","options":["rbind"]}"#,
        "",
        &HostFacts::default(),
    )
    .unwrap();
    assert!(!p.setup_dev);
    assert!(p.devices.is_empty() && p.dev_symlinks.is_empty());
}

#[test]
fn sysfs_in_a_user_namespace_without_netns_is_an_rbind_of_sys() {
    let b = TestBundle::new();
    let spec = b.spec(&config(
        r#"{"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","ro"]}"#,
        "",
    ));
    let userns = RootfsOptions {
        in_user_namespace: true,
        ..opts()
    };
    let p = plan(&spec, &b.0, userns, &HostFacts::default()).unwrap();
    assert!(
        matches!(&p.mounts[0].kind, MountKind::Bind { source, recursive: true } if source.as_bytes() == b"/sys")
    );
    assert_eq!(p.mounts[0].flags, libc::MS_NOSUID | libc::MS_RDONLY);
    // Read-only all the way down: the host's mounts under /sys come along.
    assert_eq!(
        p.mounts[0].recursive_attr,
        Some((sys::MOUNT_ATTR_RDONLY, 0))
    );
    // With its own network namespace, sysfs is mounted for real.
    let spec = b.spec(
        &config(
            r#"{"destination":"/sys","type":"sysfs","source":"sysfs"}"#,
            "",
        )
        .replace(r#"{"type":"pid"}"#, r#"{"type":"network"}"#),
    );
    let p = plan(&spec, &b.0, userns, &HostFacts::default()).unwrap();
    assert!(matches!(&p.mounts[0].kind, MountKind::Fs { .. }));
}

#[test]
fn mqueue_in_a_user_namespace_sharing_the_host_ipc_namespace() {
    let b = TestBundle::new();
    let m = r#"{"destination":"/dev/mqueue","type":"mqueue","source":"mqueue","options":["nosuid","noexec","nodev"]}"#;
    let userns = RootfsOptions {
        in_user_namespace: true,
        ..opts()
    };
    // The host's /dev/mqueue is bound when there is one.
    let host = HostFacts::from_mountinfo(
        "30 25 0:27 / /dev/mqueue rw,nosuid,nodev,noexec,relatime shared:14 - mqueue mqueue rw\n",
    );
    assert!(host.mqueue);
    let p = plan(&b.spec(&config(m, "")), &b.0, userns, &host).unwrap();
    assert!(
        matches!(&p.mounts[0].kind, MountKind::Bind { source, recursive: false } if source.as_bytes() == b"/dev/mqueue")
    );
    assert_eq!(
        p.mounts[0].flags,
        libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV
    );
    // Without one, a clear error naming the mount and the way out.
    let e = plan(&b.spec(&config(m, "")), &b.0, userns, &HostFacts::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("mounts[0]: mqueue cannot be mounted in a user namespace sharing the host's ipc namespace")
            && e.contains(r#"add {"type": "ipc"} to linux.namespaces"#),
        "{e}"
    );
    // With an ipc namespace of its own (or as root) mqueue is mounted for real.
    let own_ipc = config(m, "").replace(r#"{"type":"pid"}"#, r#"{"type":"ipc"}"#);
    let p = plan(&b.spec(&own_ipc), &b.0, userns, &HostFacts::default()).unwrap();
    assert!(matches!(&p.mounts[0].kind, MountKind::Fs { .. }));
    let p = plan(&b.spec(&config(m, "")), &b.0, opts(), &HostFacts::default()).unwrap();
    assert!(matches!(&p.mounts[0].kind, MountKind::Fs { .. }));
}

#[test]
fn cgroup_mount_follows_the_host_layout() {
    let b = TestBundle::new();
    let m = r#"{"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["nosuid","noexec","nodev","relatime","ro"]}"#;
    let v2 = HostFacts {
        cgroup2_only: true,
        ..HostFacts::default()
    };
    let p = plan_of(&b, m, "", &v2).unwrap();
    assert!(matches!(&p.mounts[0].kind, MountKind::Cgroup2 { .. }));
    let hybrid = HostFacts {
        hierarchies: vec![Hierarchy {
            name: c"cpu,cpuacct".to_owned(),
            host_mount: b"/sys/fs/cgroup/cpu,cpuacct".to_vec(),
            key: b"cpu,cpuacct".to_vec(),
            data: Some(c"cpu,cpuacct".to_owned()),
            fstype: c"cgroup".to_owned(),
            links: vec![c"cpu".to_owned(), c"cpuacct".to_owned()],
            fresh: false,
            target: CString::default(),
        }],
        ..HostFacts::default()
    };
    let p = plan_of(&b, m, "", &hybrid).unwrap();
    match &p.mounts[0].kind {
        MountKind::CgroupV1 { hierarchies } => {
            assert_eq!(
                hierarchies[0].target.as_bytes(),
                b"/sys/fs/cgroup/cpu,cpuacct"
            );
            assert!(!hierarchies[0].fresh);
        }
        k => panic!("not cgroup v1: {k:?}"),
    }
}

#[test]
fn mount_label_only_with_selinux() {
    let b = TestBundle::new();
    let m = r#"{"destination":"/t","type":"tmpfs","options":["size=1k"]},{"destination":"/p","type":"proc"}"#;
    let linux = r#","mountLabel":"system_u:object_r:container_file_t:s0""#;
    let p = plan_of(&b, m, linux, &HostFacts::default()).unwrap();
    assert_eq!(p.mounts[0].data.as_deref(), Some(c"size=1k"));
    let selinux = HostFacts {
        selinux: true,
        ..HostFacts::default()
    };
    let p = plan_of(&b, m, linux, &selinux).unwrap();
    assert_eq!(
        p.mounts[0].data.as_deref(),
        Some(c"size=1k,context=\"system_u:object_r:container_file_t:s0\"")
    );
    assert_eq!(p.mounts[1].data, None);
}

#[test]
fn shared_root_propagation_makes_the_parent_mount_private() {
    let b = TestBundle::new();
    let host = HostFacts {
        mount_points: vec![PathBuf::from("/"), std::env::temp_dir()],
        ..HostFacts::default()
    };
    let p = plan_of(&b, "", r#","rootfsPropagation":"rshared""#, &host).unwrap();
    assert_eq!(p.root_propagation, libc::MS_SHARED | libc::MS_REC);
    assert_eq!(p.final_propagation, Some(libc::MS_SHARED | libc::MS_REC));
    assert_eq!(
        p.parent_private.as_deref().unwrap().to_str().unwrap(),
        std::fs::canonicalize(std::env::temp_dir())
            .unwrap()
            .to_str()
            .unwrap()
    );
}

#[test]
fn without_a_mount_namespace_mounts_are_refused() {
    let b = TestBundle::new();
    let spec = b.spec(&config(r#"{"destination":"/proc","type":"proc"}"#, ""));
    let no_ns = RootfsOptions {
        new_mount_namespace: false,
        ..opts()
    };
    let e = plan(&spec, &b.0, no_ns, &HostFacts::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "mounts: needs a new mount namespace (linux.namespaces has no \"mount\" entry)"
    );
}

#[test]
fn mountinfo_escapes_are_decoded() {
    assert_eq!(
        unescape_mountinfo(r"/a\040b\011c"),
        PathBuf::from("/a b\tc")
    );
    assert_eq!(unescape_mountinfo(r"/x\\"), PathBuf::from(r"/x\\"));
}

#[test]
fn recursive_attributes_and_symfollow() {
    let b = TestBundle::new();
    fs::create_dir_all(b.0.join("data")).unwrap();
    let p = plan_of(
        &b,
        r#"{"destination":"/d","type":"bind","source":"data","options":["rbind","rro","rnosuid","rexec","rnoatime","nosymfollow"]},
        {"destination":"/e","type":"bind","source":"data","options":["rbind","rro","rrw"]},
        {"destination":"/f","type":"bind","source":"data","options":["rbind"]}"#,
        "",
        &HostFacts::default(),
    )
    .unwrap();
    assert_eq!(
        p.mounts[0].recursive_attr,
        Some((
            sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOATIME,
            sys::MOUNT_ATTR_NOEXEC | sys::MOUNT_ATTR_ATIME_MASK
        ))
    );
    assert_eq!(p.mounts[0].flags, libc::MS_NOSYMFOLLOW);
    assert_eq!(
        p.mounts[1].recursive_attr,
        Some((0, sys::MOUNT_ATTR_RDONLY))
    );
    assert_eq!(p.mounts[2].recursive_attr, None);
}

#[test]
fn proc_destinations_are_restricted() {
    assert_eq!(
        err_of(r#"{"destination":"/proc","type":"tmpfs"}"#, ""),
        "mounts[0].destination: /proc can only be a mount of type \"proc\""
    );
    assert_eq!(
        err_of(r#"{"destination":"/proc/self/attr","type":"tmpfs"}"#, ""),
        "mounts[0].destination: \"/proc/self/attr\" is inside /proc and not one of the files that may be mounted over"
    );
    // Via a lexical detour too.
    assert!(
        err_of(r#"{"destination":"/x/../proc/sys","type":"tmpfs"}"#, "").contains("inside /proc")
    );
    let b = TestBundle::new();
    fs::write(b.0.join("meminfo"), "").unwrap();
    plan_of(
        &b,
        r#"{"destination":"/proc","type":"proc"},{"destination":"/proc/meminfo","type":"bind","source":"meminfo","options":["bind"]},
        {"destination":"/proc/sys/fs/binfmt_misc","type":"bind","source":"/proc/sys/fs","options":["bind"]}"#,
        "",
        &HostFacts::default(),
    )
    .unwrap();
}

#[test]
fn tmpcopyup_is_a_plan_flag_not_data() {
    let b = TestBundle::new();
    let p = plan_of(
        &b,
        r#"{"destination":"/run","type":"tmpfs","options":["tmpcopyup","mode=755"]},
        {"destination":"/tmp","type":"tmpfs","options":["tmpcopyup","notmpcopyup"]}"#,
        "",
        &HostFacts::default(),
    )
    .unwrap();
    assert!(p.mounts[0].copy_up);
    assert_eq!(p.mounts[0].data.as_deref(), Some(c"mode=755"));
    assert!(!p.mounts[1].copy_up);
}

#[test]
fn host_cgroup_hierarchies_from_mountinfo() {
    let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 22 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
33 31 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory,clone_children
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd,release_agent=/x
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 22 0:40 / /mnt/with\\040space rw - tmpfs tmpfs rw
";
    let f = HostFacts::from_mountinfo(text);
    assert!(!f.cgroup2_only);
    let h: Vec<_> = f
        .hierarchies
        .iter()
        .map(|h| {
            (
                h.name.to_str().unwrap(),
                String::from_utf8(h.key.clone()).unwrap(),
                h.data.as_deref().map(|d| d.to_str().unwrap()),
                h.fstype.to_str().unwrap(),
                h.links
                    .iter()
                    .map(|l| l.to_str().unwrap())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        h,
        [
            (
                "cpu,cpuacct",
                "cpu,cpuacct".into(),
                Some("cpu,cpuacct"),
                "cgroup",
                vec!["cpu", "cpuacct"]
            ),
            ("memory", "memory".into(), Some("memory"), "cgroup", vec![]),
            (
                "systemd",
                "name=systemd".into(),
                Some("none,name=systemd"),
                "cgroup",
                vec![]
            ),
            ("unified", "".into(), None, "cgroup2", vec![]),
        ]
    );
    assert!(f.mount_points.contains(&PathBuf::from("/mnt/with space")));
    let v2 = HostFacts::from_mountinfo(
        "31 22 0:28 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
    );
    assert!(v2.cgroup2_only);
}

#[test]
fn relative_bundle_paths_become_absolute() {
    let b = TestBundle::new();
    fs::create_dir_all(b.0.join("data")).unwrap();
    let spec = b.spec(&config(
        r#"{"destination":"/d","type":"bind","source":"data","options":["bind"]}"#,
        "",
    ));
    let cwd = std::env::current_dir().unwrap();
    // A relative spelling of the same bundle, from the current directory.
    let rel: PathBuf = cwd
        .components()
        .skip(1)
        .map(|_| "..")
        .collect::<PathBuf>()
        .join(b.0.strip_prefix("/").unwrap());
    let p = plan(&spec, &rel, opts(), &HostFacts::default()).unwrap();
    match &p.mounts[0].kind {
        MountKind::Bind { source, .. } => assert!(source.as_bytes().starts_with(b"/")),
        k => panic!("not a bind: {k:?}"),
    }
    assert!(p.rootfs.as_bytes().starts_with(b"/"));
}
