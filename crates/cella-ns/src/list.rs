//! `cella ns ls`: every namespace on the host, from three sources, each namespace counted
//! once by inode: the processes (`/proc/<pid>/ns/*`), nsfs bind mounts (the mountinfo of
//! every mount namespace seen) and open fds (`/proc/<pid>/fd/*` links such as `net:[...]`).

use crate::container::{self, ContainerError};
use crate::kind::{NsSet, NsType};
use crate::sys;
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Listing failed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// /proc could not be read at all.
    #[error("read `/proc`: is procfs mounted?")]
    Proc(#[source] io::Error),
    /// The pid asked for does not exist.
    #[error("pid {pid} has exited (or never existed): pick a live one, e.g. from `ps`")]
    NoSuchPid {
        /// The pid.
        pid: i32,
    },
    /// The pid's namespaces cannot be read.
    #[error("read the namespaces of pid {pid}: run as root or as the process's owner")]
    PidNamespaces {
        /// The pid.
        pid: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The container asked for is unknown or not running.
    #[error(transparent)]
    Container(#[from] ContainerError),
}

/// One namespace and who holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// Inode number of the namespace (its identity).
    pub ino: u64,
    /// Its type.
    pub kind: NsType,
    /// Number of processes in it (0 when only a bind mount or an fd holds it).
    pub nprocs: usize,
    /// The lowest pid in it.
    pub pid: Option<i32>,
    /// Uid owning that process.
    pub uid: Option<u32>,
    /// Name of that uid (the number when /etc/passwd has no entry).
    pub user: Option<String>,
    /// Command line of that process (its name for kernel threads).
    pub command: Option<String>,
    /// Id of the cella container whose init is in it (when not the host's namespace).
    pub container: Option<String>,
    /// A bind mount holding it, as seen in the mount namespace of the process whose
    /// mount table showed it.
    pub nsfs: Option<PathBuf>,
    /// (pid, fd) of an open fd holding it, when no process is in it.
    pub fd: Option<(i32, i32)>,
    /// Inode of the owning user namespace (filled when relations are asked for).
    pub owner: Option<u64>,
    /// Inode of the parent namespace, for pid and user namespaces (relations only).
    pub parent: Option<u64>,
    /// A path through which the namespace can be opened from here.
    open_path: Option<PathBuf>,
}

/// One namespace as `cella ns ls --json` prints it: lsns's keys in lsns's order, then
/// cella's (`container`, `nsfs`; `pns` and `ons` with relations).
#[derive(Debug, serde::Serialize)]
pub struct JsonRecord<'a> {
    /// Inode.
    pub ns: u64,
    /// Type name.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Process count.
    pub nprocs: usize,
    /// Lowest pid.
    pub pid: Option<i32>,
    /// User of that pid.
    pub user: Option<&'a str>,
    /// Command of that pid.
    pub command: Option<&'a str>,
    /// Owning cella container.
    pub container: Option<&'a str>,
    /// A bind mount holding the namespace.
    pub nsfs: Option<&'a Path>,
    /// Parent namespace (with relations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pns: Option<Option<u64>>,
    /// Owning user namespace (with relations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ons: Option<Option<u64>>,
}

/// The whole `--json` document, `{"namespaces": [...]}` as lsns prints it.
#[derive(Debug, serde::Serialize)]
pub struct JsonListing<'a> {
    /// The records.
    pub namespaces: Vec<JsonRecord<'a>>,
}

impl Namespace {
    /// This namespace as a JSON record; `relations` adds `pns` and `ons`.
    pub fn json_record(&self, relations: bool) -> JsonRecord<'_> {
        JsonRecord {
            ns: self.ino,
            kind: self.kind.name(),
            nprocs: self.nprocs,
            pid: self.pid,
            user: self.user.as_deref(),
            command: self.command.as_deref(),
            container: self.container.as_deref(),
            nsfs: self.nsfs.as_deref(),
            pns: relations.then_some(self.parent),
            ons: relations.then_some(self.owner),
        }
    }
}

/// What to list.
#[derive(Clone, Debug)]
pub struct ListOptions {
    /// Types to list.
    pub types: NsSet,
    /// Only the namespaces of this process.
    pub pid: Option<i32>,
    /// Only the namespaces of this container.
    pub container: Option<String>,
    /// Container state root (`<root>/<id>/state.json`).
    pub state_root: PathBuf,
    /// Also find each namespace's owner and parent (one open and ioctl per namespace).
    pub relations: bool,
}

/// Parses a namespace link text such as `net:[4026531833]`.
pub fn parse_ns_link(text: &[u8]) -> Option<(NsType, u64)> {
    let colon = text.iter().position(|b| *b == b':')?;
    let kind = NsType::from_name(std::str::from_utf8(&text[..colon]).ok()?)?;
    let rest = text[colon + 1..].strip_prefix(b"[")?.strip_suffix(b"]")?;
    let ino = std::str::from_utf8(rest).ok()?.parse().ok()?;
    Some((kind, ino))
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Reads the namespace inode of `kind` for `pid`, or None when unreadable.
pub fn ns_inode(pid: i32, kind: NsType) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/{}", kind.name())).ok()?;
    parse_ns_link(link.as_os_str().as_encoded_bytes()).map(|(_, i)| i)
}

/// The host's namespaces, to tell a container's own namespaces from shared ones: those of
/// pid 1, else of kthreadd (pid 2, always in the initial namespaces), else our own.
pub fn host_inodes() -> HashMap<NsType, u64> {
    for pid in [1, 2, std::process::id() as i32] {
        let m: HashMap<NsType, u64> = NsType::ALL
            .iter()
            .filter_map(|t| ns_inode(pid, *t).map(|i| (*t, i)))
            .collect();
        if m.len() == NsType::ALL.len() {
            return m;
        }
    }
    HashMap::new()
}

struct Scan {
    list: Vec<Namespace>,
    index: HashMap<u64, usize>,
}

impl Scan {
    fn add_holder(&mut self, kind: NsType, ino: u64) -> &mut Namespace {
        let i = *self.index.entry(ino).or_insert_with(|| {
            self.list.push(Namespace {
                ino,
                kind,
                nprocs: 0,
                pid: None,
                uid: None,
                user: None,
                command: None,
                container: None,
                nsfs: None,
                fd: None,
                owner: None,
                parent: None,
                open_path: None,
            });
            self.list.len() - 1
        });
        &mut self.list[i]
    }
}

fn pids() -> Result<Vec<i32>, ListError> {
    let mut v: Vec<i32> = std::fs::read_dir("/proc")
        .map_err(ListError::Proc)?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// Lists namespaces as asked.
pub fn list(opts: &ListOptions) -> Result<Vec<Namespace>, ListError> {
    let proc_dir =
        sys::openat(None, c"/proc", libc::O_PATH | libc::O_DIRECTORY).map_err(ListError::Proc)?;
    let mut scan = Scan {
        list: Vec::new(),
        index: HashMap::new(),
    };
    // One pid per mount namespace, to read each mount table once.
    let mut mount_ns: HashMap<u64, i32> = HashMap::new();
    let names: Vec<(NsType, CString)> = NsType::ALL.iter().map(|t| (*t, c(t.name()))).collect();
    let mut buf = [0u8; 64];
    let all_pids = pids()?;
    let nsfs_dev = std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.dev());
    for &pid in &all_pids {
        let Ok(nsdir) = sys::openat(
            Some(proc_dir.as_fd()),
            &c(&format!("{pid}/ns")),
            libc::O_PATH | libc::O_DIRECTORY,
        ) else {
            continue;
        };
        for (t, name) in &names {
            if !opts.types.contains(*t) && *t != NsType::Mnt {
                continue;
            }
            let Ok(text) = sys::readlinkat(nsdir.as_fd(), name, &mut buf) else {
                continue;
            };
            let Some((kind, ino)) = parse_ns_link(text) else {
                continue;
            };
            if kind == NsType::Mnt {
                mount_ns.entry(ino).or_insert(pid);
                if !opts.types.contains(NsType::Mnt) {
                    continue;
                }
            }
            let ns = scan.add_holder(kind, ino);
            ns.nprocs += 1;
            if ns.pid.is_none_or(|p| pid < p) {
                ns.pid = Some(pid);
                ns.open_path = Some(format!("/proc/{pid}/ns/{}", kind.name()).into());
            }
        }
        scan_fds(&proc_dir, pid, opts.types, nsfs_dev, &mut scan);
    }
    // Our own mount table first, so paths shown for bind mounts are ours when possible.
    let self_pid = std::process::id() as i32;
    if let Some(own) = ns_inode(self_pid, NsType::Mnt) {
        mount_ns.insert(own, self_pid);
    }
    let mut mns: Vec<(u64, i32)> = mount_ns.into_iter().collect();
    mns.sort_by_key(|(_, p)| if *p == self_pid { -1 } else { *p });
    let mut text = Vec::new();
    for (_, pid) in mns {
        scan_mounts(pid, pid == self_pid, opts.types, &mut text, &mut scan);
    }
    let mut list = scan.list;
    attach_containers(&opts.state_root, &mut list);
    if let Some(pid) = opts.pid {
        let keep = pid_inodes(pid)?;
        list.retain(|n| keep.contains(&n.ino));
    }
    if let Some(id) = &opts.container {
        let c = container::running(&opts.state_root, id)?;
        list.retain(|n| n.container.as_deref() == Some(c.id.as_str()));
    }
    let mut users = Users::default();
    // Many namespaces share their lowest process: read each process once.
    let mut procs: HashMap<i32, ProcessInfo> = HashMap::new();
    for n in &mut list {
        if let Some(pid) = n.pid {
            let (uid, user, command) = procs
                .entry(pid)
                .or_insert_with(|| process_info(pid, &mut users))
                .clone();
            (n.uid, n.user, n.command) = (uid, user, command);
        }
        if opts.relations {
            fill_relations(n);
        }
    }
    list.sort_by_key(|n| n.ino);
    Ok(list)
}

/// Type and inode of fd `fd` of `pid` when it is an nsfs file (device `nsfs_dev`).
fn nsfs_fd(pid: i32, fd: &str, nsfs_dev: Option<u64>) -> Option<(NsType, u64)> {
    let path = format!("/proc/{pid}/fd/{fd}");
    let md = std::fs::metadata(&path).ok()?;
    if Some(md.dev()) != nsfs_dev {
        return None;
    }
    let f = sys::openat(None, &c(&path), libc::O_RDONLY).ok()?;
    let flag = sys::ns_type(f.as_fd()).ok()?;
    let kind = NsType::ALL.into_iter().find(|t| t.clone_flag() == flag)?;
    Some((kind, md.ino()))
}

fn scan_fds(proc_dir: &OwnedFd, pid: i32, types: NsSet, nsfs_dev: Option<u64>, scan: &mut Scan) {
    let path = format!("/proc/{pid}/fd");
    let Ok(entries) = std::fs::read_dir(&path) else {
        return;
    };
    let Ok(fddir) = sys::openat(
        Some(proc_dir.as_fd()),
        &c(&format!("{pid}/fd")),
        libc::O_PATH | libc::O_DIRECTORY,
    ) else {
        return;
    };
    let mut buf = [0u8; 64];
    for e in entries.flatten() {
        let name = e.file_name();
        let Ok(cname) = CString::new(name.as_encoded_bytes()) else {
            continue;
        };
        let Ok(text) = sys::readlinkat(fddir.as_fd(), &cname, &mut buf) else {
            continue;
        };
        // An nsfs file opened through a bind mount that was lazily unmounted since reads
        // as "/": check those (rare) by device; other paths are ordinary files.
        let found = if text == b"/" {
            nsfs_fd(pid, &name.to_string_lossy(), nsfs_dev)
        } else if text.first() == Some(&b'/') {
            None
        } else {
            parse_ns_link(text)
        };
        let Some((kind, ino)) = found else {
            continue;
        };
        if !types.contains(kind) {
            continue;
        }
        let fd: i32 = name.to_str().and_then(|s| s.parse().ok()).unwrap_or(-1);
        let ns = scan.add_holder(kind, ino);
        if ns.nprocs == 0 && ns.fd.is_none() && ns.nsfs.is_none() {
            ns.fd = Some((pid, fd));
            ns.open_path = Some(format!("/proc/{pid}/fd/{fd}").into());
        }
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the nsfs mounts of a mountinfo text: (type, inode, mount point).
pub fn nsfs_mounts(mountinfo: &str) -> Vec<(NsType, u64, String)> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        if !post.starts_with("nsfs ") {
            continue;
        }
        let mut f = pre.split(' ');
        let (Some(root), Some(mp)) = (f.nth(3), f.next()) else {
            continue;
        };
        if let Some((kind, ino)) = parse_ns_link(root.as_bytes()) {
            out.push((kind, ino, unescape(mp)));
        }
    }
    out
}

/// Reads a whole /proc file into `buf` with few large reads (each read of mountinfo
/// walks the mount table again); `buf` is reused, so its zeroing is paid once.
fn read_proc_file(path: &str, buf: &mut Vec<u8>) -> io::Result<usize> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut len = 0;
    loop {
        if buf.len() - len < 16 * 1024 {
            buf.resize((buf.len() * 2).max(64 * 1024), 0);
        }
        let n = f.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(len);
        }
        len += n;
    }
}

fn scan_mounts(pid: i32, own: bool, types: NsSet, buf: &mut Vec<u8>, scan: &mut Scan) {
    let path = if own {
        "/proc/self/mountinfo".to_string()
    } else {
        format!("/proc/{pid}/mountinfo")
    };
    let Ok(len) = read_proc_file(&path, buf) else {
        return;
    };
    let text = String::from_utf8_lossy(&buf[..len]);
    for (kind, ino, mp) in nsfs_mounts(&text) {
        if !types.contains(kind) {
            continue;
        }
        let ns = scan.add_holder(kind, ino);
        if ns.nsfs.is_none() {
            let open: PathBuf = if own {
                PathBuf::from(&mp)
            } else {
                format!("/proc/{pid}/root{mp}").into()
            };
            if ns.nprocs == 0 {
                ns.fd = None;
                ns.open_path = Some(open);
            }
            ns.nsfs = Some(PathBuf::from(mp));
        }
    }
}

fn attach_containers(root: &Path, list: &mut [Namespace]) {
    let found = container::containers(root);
    if found.is_empty() {
        return;
    }
    let host = host_inodes();
    let mut owner: HashMap<u64, String> = HashMap::new();
    for c in found.iter().filter(|c| c.pid > 0 && c.status != "stopped") {
        for t in NsType::ALL {
            if let Some(ino) = ns_inode(c.pid, t) {
                if host.get(&t) != Some(&ino) {
                    owner.entry(ino).or_insert_with(|| c.id.clone());
                }
            }
        }
    }
    for n in list {
        n.container = owner.get(&n.ino).cloned();
    }
}

fn pid_inodes(pid: i32) -> Result<Vec<u64>, ListError> {
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(ListError::NoSuchPid { pid });
    }
    let mut v = Vec::new();
    for t in NsType::ALL {
        match std::fs::read_link(format!("/proc/{pid}/ns/{}", t.name())) {
            Ok(link) => {
                v.extend(parse_ns_link(link.as_os_str().as_encoded_bytes()).map(|(_, i)| i))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ListError::NoSuchPid { pid });
            }
            Err(source) => return Err(ListError::PidNamespaces { pid, source }),
        }
    }
    Ok(v)
}

/// Uid to name, from /etc/passwd read once (no NSS: listing must stay cheap).
#[derive(Default)]
struct Users(Option<HashMap<u32, String>>);

impl Users {
    fn name(&mut self, uid: u32) -> String {
        let map = self.0.get_or_insert_with(|| {
            std::fs::read_to_string("/etc/passwd")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let mut f = l.split(':');
                    let name = f.next()?;
                    Some((f.nth(1)?.parse().ok()?, name.to_string()))
                })
                .collect()
        });
        map.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
    }
}

/// (uid, user name, command) of a process.
type ProcessInfo = (Option<u32>, Option<String>, Option<String>);

/// (uid, user name, command) of `pid`.
fn process_info(pid: i32, users: &mut Users) -> ProcessInfo {
    let uid = std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid());
    (uid, uid.map(|u| users.name(u)), command_of(pid))
}

/// The command line of `pid` with spaces for NULs, or its name for kernel threads.
pub fn command_of(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let raw = raw.strip_suffix(b"\0").unwrap_or(&raw);
    if raw.is_empty() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        return Some(comm.trim_end_matches('\n').to_string());
    }
    let text: Vec<u8> = raw
        .iter()
        .map(|b| if *b == 0 { b' ' } else { *b })
        .collect();
    Some(String::from_utf8_lossy(&text).into_owned())
}

fn fill_relations(n: &mut Namespace) {
    let Some(path) = &n.open_path else {
        return;
    };
    let Ok(cpath) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    let Ok(fd) = sys::openat(None, &cpath, libc::O_RDONLY) else {
        return;
    };
    n.owner = sys::ns_ioctl(fd.as_fd(), sys::NS_GET_USERNS)
        .and_then(|u| sys::fstat_ino(u.as_fd()))
        .ok()
        .map(|(ino, _)| ino);
    if matches!(n.kind, NsType::Pid | NsType::User) {
        n.parent = sys::ns_ioctl(fd.as_fd(), sys::NS_GET_PARENT)
            .and_then(|p| sys::fstat_ino(p.as_fd()))
            .ok()
            .map(|(ino, _)| ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_links() {
        assert_eq!(
            parse_ns_link(b"net:[4026531833]"),
            Some((NsType::Net, 4026531833))
        );
        assert_eq!(parse_ns_link(b"socket:[123]"), None);
        assert_eq!(parse_ns_link(b"/dev/null"), None);
        assert_eq!(parse_ns_link(b"mnt:[x]"), None);
    }

    #[test]
    fn finds_nsfs_mounts() {
        let text = "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
                    90 27 0:4 net:[4026532177] /run/netns/a\\040b rw - nsfs nsfs rw\n\
                    91 27 0:4 uts:[4026532178] /tmp/u rw shared:5 - nsfs nsfs rw\n";
        let m = nsfs_mounts(text);
        assert_eq!(
            m,
            vec![
                (NsType::Net, 4026532177, "/run/netns/a b".to_string()),
                (NsType::Uts, 4026532178, "/tmp/u".to_string()),
            ]
        );
    }
}
