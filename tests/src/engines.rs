//! Set-up shared by the engine tests (Podman and containerd driving cella): a busybox
//! image as a plain tar and as an OCI archive, a private Podman store, a private
//! containerd daemon, a throwaway network namespace, and a pty driver for `run -it`.
//!
//! Everything lives in a scratch directory of its own and is torn down by Drop guards,
//! also when a test fails: containers, storage mounts, cgroups, daemons, namespaces.

use crate::{cella_bin, make_busybox_rootfs, output_via_files, scratch_root, show, unique};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The image name the tests import.
pub const IMAGE: &str = "localhost/cella-busybox:latest";

/// Runs `cmd` and panics with its output unless it succeeded.
fn must(cmd: Command, what: &str) -> Output {
    let out = output_via_files(cmd);
    assert!(out.status.success(), "{what}: {}", show(&out));
    out
}

/// Writes a tar of a fresh busybox rootfs to `dir/rootfs.tar` and returns its path.
pub fn busybox_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    make_busybox_rootfs(&rootfs);
    let tar = dir.join("rootfs.tar");
    let mut c = Command::new("tar");
    c.arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".");
    must(c, "tar the busybox rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    tar
}

/// sha256 of a file, through coreutils' sha256sum.
fn sha256(path: &Path) -> String {
    let mut c = Command::new("sha256sum");
    c.arg(path);
    let out = must(c, "sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum prints a digest")
        .to_owned()
}

/// Stores `bytes` as a blob of the OCI layout at `layout`; returns (digest, size).
fn put_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let tmp = layout.join("blob.tmp");
    fs::write(&tmp, bytes).expect("write blob");
    let hex = sha256(&tmp);
    fs::rename(&tmp, layout.join("blobs/sha256").join(&hex)).expect("move blob");
    (format!("sha256:{hex}"), bytes.len())
}

/// Writes an OCI image archive (`oci-archive`, what `ctr image import` reads) whose one
/// layer is the uncompressed tar `layer`, named `name`; returns its path.
pub fn oci_archive(dir: &Path, layer: &Path, name: &str) -> PathBuf {
    let layout = dir.join("oci-layout");
    fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir oci layout");
    let (layer_digest, layer_size) = put_blob(&layout, &fs::read(layer).expect("read layer"));
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = put_blob(&layout, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = put_blob(&layout, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest_size,
                       "annotations": {"io.containerd.image.name": name,
                                       "org.opencontainers.image.ref.name": "latest"}}],
    });
    fs::write(layout.join("index.json"), index.to_string()).expect("write index.json");
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    let archive = dir.join("image.oci.tar");
    let mut c = Command::new("tar");
    c.arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .args(["oci-layout", "index.json", "blobs"]);
    must(c, "tar the OCI layout");
    archive
}

/// Unmounts every mount at or below `dir`, deepest first (lazily: a leftover process
/// may still hold one).
pub fn umount_below(dir: &Path) {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .map(str::to_owned)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(&p).output();
    }
}

/// Mount points at or below `dir` (for "nothing left behind" checks).
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .map(str::to_owned)
        .collect()
}

/// Every directory of cgroup `rel` (relative to each hierarchy's root) that exists,
/// in every v1 hierarchy and in the unified one.
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    let mut dirs = Vec::new();
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let d = Path::new("/sys/fs/cgroup").join(rel);
        if d.is_dir() {
            dirs.push(d);
        }
        return dirs;
    }
    for e in fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let d = e.path().join(rel);
        if e.path().is_dir() && d.is_dir() {
            dirs.push(d);
        }
    }
    dirs
}

/// Removes cgroup `rel` and everything below it in every hierarchy, children first.
pub fn remove_cgroup_tree(rel: &str) {
    fn rm(dir: &Path) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rm(&e.path());
            }
        }
        let _ = fs::remove_dir(dir);
    }
    for d in cgroup_dirs(rel) {
        rm(&d);
    }
}

/// A script that runs Debian's crun as an oracle. crun 1.8 refuses this machine's
/// hybrid layout because the v2 hierarchy holds hugetlb: each call runs in a private
/// mount namespace where an empty file hides /sys/fs/cgroup/unified/cgroup.controllers
/// (per process: nothing global changes). Elsewhere it is crun itself.
pub fn crun_runtime(dir: &Path) -> PathBuf {
    let crun = crate::which("crun").expect("crun is installed");
    let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    if !hybrid.exists() {
        return crun;
    }
    // Written under a unique name, then renamed: parallel tests share the result.
    let empty = dir.join("empty-controllers");
    let tmp = dir.join(unique("empty"));
    fs::write(&tmp, "").expect("write empty file");
    fs::rename(&tmp, &empty).expect("rename empty file");
    let script = dir.join("crun-hybrid");
    let tmp = dir.join(unique("crun-hybrid"));
    crate::write_script(
        &tmp,
        &format!(
            "#!/bin/sh\nexec unshare -m --propagation private sh -c 'mount --bind {} {} && exec {} \"$@\"' crun \"$@\"\n",
            empty.display(),
            hybrid.display(),
            crun.display()
        ),
    );
    fs::rename(&tmp, &script).expect("rename crun script");
    script
}

/// A private Podman: its own storage, run dir, tmp dir, network config, cgroup parent
/// and runtime state root, all in one scratch directory; `--runtime` is the given
/// binary. The busybox image is imported as [`IMAGE`].
pub struct Podman {
    /// The scratch directory holding everything.
    pub dir: PathBuf,
    /// The OCI runtime podman drives.
    pub runtime: PathBuf,
    /// The runtime's state root (its default: cella's /run/cella).
    pub state: PathBuf,
    /// The cgroup (relative to each hierarchy's root) holding this store's containers.
    pub cgroup_parent: String,
    driver: &'static str,
}

impl Podman {
    /// A store driving `runtime`, with the busybox image imported. Tries overlay, then
    /// vfs where overlay cannot be mounted.
    pub fn new(runtime: &Path) -> Podman {
        // conmon's attach socket lives under the run root, whose path podman limits
        // to 50 characters: a short directory under /tmp, not the scratch root.
        let dir = std::env::temp_dir().join(unique("cella-pm"));
        let name = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let mut p = Podman {
            state: PathBuf::from("/run/cella"),
            dir,
            runtime: runtime.to_path_buf(),
            cgroup_parent: format!("/cella-e2e-{name}"),
            driver: "overlay",
        };
        p.write_config();
        let tar = busybox_tar(&p.dir);
        let first = p.output([OsStr::new("import"), tar.as_os_str(), OsStr::new(IMAGE)]);
        if !first.status.success() {
            // overlay unusable here (e.g. the scratch dir is on overlayfs): use vfs.
            let _ = p.output(["system", "reset", "-f"]);
            umount_below(&p.dir.join("graph"));
            let _ = fs::remove_dir_all(p.dir.join("graph"));
            p.driver = "vfs";
            p.write_config();
            p.ok([OsStr::new("import"), tar.as_os_str(), OsStr::new(IMAGE)]);
        }
        p
    }

    fn write_config(&self) {
        for d in ["graph", "run", "tmp", "net", "imgtmp"] {
            fs::create_dir_all(self.dir.join(d)).expect("mkdir podman dir");
        }
        // This host's RLIMIT_NOFILE hard limit is 20000 and root lacks
        // CAP_SYS_RESOURCE: podman's default ulimits would fail with any runtime.
        fs::write(
            self.dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 image_copy_tmp_dir = \"{}\"\n[network]\nnetwork_backend = \"netavark\"\n",
                self.dir.join("imgtmp").display()
            ),
        )
        .expect("write containers.conf");
        fs::write(
            self.dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"{}\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                self.driver,
                self.dir.join("graph").display(),
                self.dir.join("run").display()
            ),
        )
        .expect("write storage.conf");
    }

    /// `podman <private flags> <args>`.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("podman");
        let d = &self.dir;
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("TMPDIR", d.join("imgtmp"))
            .arg("--root")
            .arg(d.join("graph"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--network-config-dir")
            .arg(d.join("net"))
            .arg("--storage-driver")
            .arg(self.driver)
            .arg("--cgroup-manager")
            .arg("cgroupfs")
            .arg("--events-backend")
            .arg("file")
            .arg("--runtime")
            .arg(&self.runtime)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs `podman <args>` (output through files: conmon outlives podman).
    pub fn output<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        output_via_files(self.cmd(args))
    }

    /// Runs `podman <args>`, panics unless it succeeded, returns stdout.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.output(args);
        assert!(out.status.success(), "podman failed: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman run --rm --cgroup-parent <ours> <flags> IMAGE <cmd>`.
    pub fn run(&self, flags: &[&str], cmd: &[&str]) -> Output {
        self.output(self.run_args(flags, cmd))
    }

    /// The arguments of [`Podman::run`], for callers that spawn podman themselves.
    pub fn run_args(&self, flags: &[&str], cmd: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec!["run".into(), "--rm".into()];
        a.push(format!("--cgroup-parent={}", self.cgroup_parent));
        a.extend(flags.iter().map(|s| s.to_string()));
        a.push(IMAGE.into());
        a.extend(cmd.iter().map(|s| s.to_string()));
        a
    }

    /// Starts a detached container running `sleep` as `name`, without `--rm`.
    pub fn run_detached(&self, name: &str, flags: &[&str]) -> String {
        let mut a: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name.into()];
        a.push(format!("--cgroup-parent={}", self.cgroup_parent));
        a.extend(flags.iter().map(|s| s.to_string()));
        a.extend([IMAGE.into(), "sleep".into(), "1000".into()]);
        self.ok(a).trim().to_owned()
    }

    /// Containers of this store the runtime still has state for: entries of its root
    /// whose state.json names a bundle inside this store. (Podman 4.3 leaves
    /// `--runtime-flag root=` off its `delete` call, so the runtime keeps its default
    /// root and this store's entries are told apart by their bundle.)
    pub fn runtime_state_left(&self) -> Vec<String> {
        let ours = self.dir.to_string_lossy().into_owned();
        fs::read_dir(&self.state)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let text = fs::read_to_string(e.path().join("state.json")).unwrap_or_default();
                serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| {
                    v["bundle"]
                        .as_str()
                        .is_some_and(|b| b.starts_with(&format!("{ours}/")))
                })
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Container cgroups left under this store's cgroup parent (podman's own `conmon`
    /// cgroup excepted).
    pub fn container_cgroups_left(&self) -> Vec<PathBuf> {
        cgroup_dirs(&self.cgroup_parent)
            .iter()
            .flat_map(|d| fs::read_dir(d).into_iter().flatten().flatten())
            .filter(|e| e.path().is_dir() && e.file_name() != "conmon")
            .map(|e| e.path())
            .collect()
    }

    /// Container root filesystems still mounted (podman mounts them under graph/).
    pub fn rootfs_mounts_left(&self) -> Vec<String> {
        mounts_below(&self.dir.join("graph"))
            .into_iter()
            .filter(|m| m.ends_with("/merged"))
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.output(["rm", "-a", "-f", "-t", "0"]);
        let _ = self.output(["system", "reset", "-f"]);
        // What podman could not remove: the runtime's own state, mounts, cgroups.
        for id in self.runtime_state_left() {
            let _ = Command::new(&self.runtime)
                .arg("--root")
                .arg(&self.state)
                .args(["delete", "--force", &id])
                .output();
        }
        umount_below(&self.dir);
        remove_cgroup_tree(&self.cgroup_parent);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A network namespace made by the test (`ip netns add`), deleted on drop.
pub struct NetNs {
    /// Its name under /run/netns.
    pub name: String,
}

impl NetNs {
    /// Creates the namespace and sets its loopback up.
    pub fn new(prefix: &str) -> NetNs {
        let name = unique(prefix);
        let mut c = Command::new("ip");
        c.args(["netns", "add", &name]);
        must(c, "ip netns add");
        let ns = NetNs { name };
        let mut c = Command::new("ip");
        c.args(["-n", &ns.name, "link", "set", "lo", "up"]);
        must(c, "set lo up");
        ns
    }

    /// `cmd` made to run inside the namespace: `nsenter --net=/run/netns/NAME` (not
    /// `ip netns exec`, which remounts /sys and so hides the cgroup mounts podman needs).
    pub fn wrap(&self, cmd: Command) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(cmd.get_program());
        c.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.stdin(Stdio::null());
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs `cmd` with a new pty as its controlling terminal (rows x cols), as a user at a
/// terminal would; returns everything written to the terminal and the exit code.
/// Gives up (killing it) after `timeout`.
pub fn run_in_pty(mut cmd: Command, rows: u16, cols: u16, timeout: Duration) -> (String, i32) {
    let (mut master, mut slave) = (-1, -1);
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the live ints and reads the winsize
    // for the duration of the call; the name and termios pointers may be null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty returned these two descriptors; nothing else owns them.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup pty slave"));
    cmd.stdin(stdio(&slave))
        .stdout(stdio(&slave))
        .stderr(stdio(&slave));
    // SAFETY: runs in the forked child before exec; setsid and ioctl are
    // async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child: Child = cmd.spawn().expect("spawn in pty");
    drop(cmd);
    drop(slave);
    let reader = std::thread::spawn(move || {
        let mut f = fs::File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once every slave descriptor is closed.
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A process left holding the slave would keep the reader blocked: give up on it
    // after a grace period (the thread then leaks, with the master).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = if reader.is_finished() {
        reader.join().expect("reader")
    } else {
        Vec::new()
    };
    (
        String::from_utf8_lossy(&out).into_owned(),
        status.code().unwrap_or(-1),
    )
}

/// A containerd daemon of the test's own: root, state, sockets and config in a scratch
/// directory, the CRI plugin off, its own namespace; killed and cleaned up on drop.
pub struct Containerd {
    /// The scratch directory.
    pub dir: PathBuf,
    /// The gRPC socket.
    pub address: PathBuf,
    /// The containerd namespace the test uses (the runc shim keeps the runtime's state
    /// under /run/containerd/runc/<namespace>).
    pub namespace: String,
    daemon: Child,
}

impl Containerd {
    /// Starts the daemon and waits until it answers.
    pub fn start() -> Containerd {
        let dir = scratch_root().join(unique("containerd"));
        fs::create_dir_all(&dir).expect("mkdir containerd dir");
        let address = dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{a}\"\n[ttrpc]\n  address = \"{a}.ttrpc\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n",
            d = dir.display(),
            a = address.display()
        );
        fs::write(dir.join("config.toml"), config).expect("write config.toml");
        let log = fs::File::create(dir.join("containerd.log")).expect("create log");
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let name = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let c = Containerd {
            dir,
            address,
            namespace: name,
            daemon,
        };
        let start = Instant::now();
        loop {
            if c.ctr(["version"]).status.success() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd did not come up: {}",
                fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// `ctr --address <ours> --namespace <ours> <args>`.
    pub fn ctr_cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs ctr (output through files: shims outlive it).
    pub fn ctr<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        output_via_files(self.ctr_cmd(args))
    }

    /// Runs ctr and panics unless it succeeded; returns stdout.
    pub fn ctr_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.ctr(args);
        assert!(out.status.success(), "ctr failed: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Imports the busybox image as [`IMAGE`].
    pub fn import_busybox(&self) {
        let tar = busybox_tar(&self.dir);
        let archive = oci_archive(&self.dir, &tar, IMAGE);
        self.ctr_ok([
            OsStr::new("image"),
            OsStr::new("import"),
            archive.as_os_str(),
        ]);
    }

    /// Where the runc shim keeps the runtime's state for our namespace.
    pub fn runtime_root(&self) -> PathBuf {
        Path::new("/run/containerd/runc").join(&self.namespace)
    }

    /// The status column of `ctr task ls` for `id` (RUNNING, PAUSED, STOPPED...).
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr_ok(["task", "ls"]);
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.first() == Some(&id))
            .and_then(|f| f.get(2).map(|s| s.to_string()))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks first (their shims hold mounts), then containers, then the daemon.
        let tasks = String::from_utf8_lossy(&self.ctr(["task", "ls", "-q"]).stdout).into_owned();
        for t in tasks.lines() {
            let _ = self.ctr(["task", "kill", "-s", "SIGKILL", t]);
            let _ = self.ctr(["task", "delete", "--force", t]);
        }
        let conts =
            String::from_utf8_lossy(&self.ctr(["container", "ls", "-q"]).stdout).into_owned();
        for c in conts.lines() {
            let _ = self.ctr(["container", "delete", c]);
        }
        // SAFETY: kill(2) on the daemon we spawned and have not reaped yet.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while self.daemon.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.daemon.kill();
                let _ = self.daemon.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let root = self.runtime_root();
        for e in fs::read_dir(&root).into_iter().flatten().flatten() {
            let _ = Command::new(cella_bin())
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force"])
                .arg(e.file_name())
                .output();
        }
        let _ = fs::remove_dir_all(&root);
        // ctr puts each container in cgroup /<namespace>/<id>: the parent stays.
        remove_cgroup_tree(&self.namespace);
        umount_below(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}
