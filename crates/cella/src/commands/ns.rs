//! `cella ns`: list, enter, unshare, create and remove namespaces. Flags mirror
//! util-linux's lsns, nsenter and unshare so that habits carry over.

use crate::Cli;
use crate::commands::CmdResult;
use cella_ns::{
    DirChoice, EnterOptions, ListOptions, NamedDirs, Namespace, NsSet, NsType, Propagation,
    UnshareOptions,
};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

/// Namespace tools.
#[derive(clap::Subcommand, Debug)]
pub enum NsCommand {
    /// List every namespace on the host, as lsns does, with the owning cella container.
    Ls(LsArgs),
    /// Run a command in the namespaces of a process or container, as nsenter does.
    Enter(EnterArgs),
    /// Run a command in new namespaces, as unshare does.
    Unshare(UnshareArgs),
    /// Create named, persistent namespaces (net ones at /run/netns/NAME, for ip netns).
    Create(CreateArgs),
    /// Remove named namespaces made by `cella ns create` (or `ip netns add`).
    Rm(RmArgs),
}

/// The type flags shared by unshare and create.
#[derive(clap::Args, Debug, Default)]
pub struct TypeFlags {
    /// Mount namespace.
    #[arg(short = 'm', long)]
    mount: bool,
    /// UTS namespace (hostname).
    #[arg(short = 'u', long)]
    uts: bool,
    /// IPC namespace.
    #[arg(short = 'i', long)]
    ipc: bool,
    /// Network namespace.
    #[arg(short = 'n', long)]
    net: bool,
    /// Pid namespace (the command must be forked to be in it: see --fork).
    #[arg(short = 'p', long)]
    pid: bool,
    /// User namespace.
    #[arg(short = 'U', long)]
    user: bool,
    /// Cgroup namespace.
    #[arg(short = 'C', long)]
    cgroup: bool,
    /// Time namespace (applies to children: see --fork).
    #[arg(short = 'T', long)]
    time: bool,
}

impl TypeFlags {
    fn set(&self) -> NsSet {
        [
            (self.mount, NsType::Mnt),
            (self.uts, NsType::Uts),
            (self.ipc, NsType::Ipc),
            (self.net, NsType::Net),
            (self.pid, NsType::Pid),
            (self.user, NsType::User),
            (self.cgroup, NsType::Cgroup),
            (self.time, NsType::Time),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, t)| t)
        .collect()
    }
}

/// `cella ns unshare`.
#[derive(clap::Args, Debug)]
pub struct UnshareArgs {
    #[command(flatten)]
    types: TypeFlags,
    /// Map root inside onto our uid and gid (implies --user).
    #[arg(short = 'r', long = "map-root-user")]
    map_root_user: bool,
    /// Map this uid inside onto our uid (implies --user).
    #[arg(long = "map-user", value_name = "UID")]
    map_user: Option<u32>,
    /// Map this gid inside onto our gid (implies --user).
    #[arg(long = "map-group", value_name = "GID")]
    map_group: Option<u32>,
    /// Map our first /etc/subuid and /etc/subgid ranges to ids from 0 (via newuidmap).
    #[arg(long = "map-auto")]
    map_auto: bool,
    /// CLOCK_MONOTONIC offset in seconds in the new time namespace (implies --time).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    monotonic: Option<i64>,
    /// CLOCK_BOOTTIME offset in seconds in the new time namespace (implies --time).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    boottime: Option<i64>,
    /// Fork and run the command as a child (it is then inside new pid/time namespaces).
    #[arg(short = 'f', long)]
    fork: bool,
    /// Mount a fresh proc filesystem (at DIR, default /proc) before running the command
    /// (implies --mount).
    #[arg(long = "mount-proc", value_name = "DIR", num_args = 0..=1, require_equals = true, default_missing_value = "/proc")]
    mount_proc: Option<PathBuf>,
    /// Propagation of / in the new mount namespace: private, shared, slave or unchanged.
    #[arg(long, value_name = "MODE", default_value = "private", value_parser = parse_propagation)]
    propagation: Propagation,
    /// Kill the child with SIG (default KILL) when cella dies (implies --fork).
    #[arg(long = "kill-child", value_name = "SIG", num_args = 0..=1, require_equals = true, default_missing_value = "KILL", value_parser = parse_signal)]
    kill_child: Option<i32>,
    /// Root directory for the command.
    #[arg(short = 'R', long = "root", value_name = "DIR")]
    root: Option<PathBuf>,
    /// Working directory for the command (inside the new root).
    #[arg(short = 'w', long = "wd", value_name = "DIR")]
    wd: Option<PathBuf>,
    /// Keep the new namespaces alive by bind mounts: on FILE (one type), or on DIR/<type>
    /// for each type when DIR is a directory.
    #[arg(long, value_name = "DIR|FILE")]
    persist: Option<PathBuf>,
    /// Command and arguments (default: $SHELL or /bin/sh).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

/// `cella ns create`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The name.
    name: String,
    /// Types to create (default: --net).
    #[command(flatten)]
    types: TypeFlags,
}

/// `cella ns rm`.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// The names.
    #[arg(required = true)]
    names: Vec<String>,
}

fn parse_propagation(s: &str) -> Result<Propagation, String> {
    Propagation::from_name(s).ok_or_else(|| {
        format!("unknown propagation {s:?}: use private, shared, slave or unchanged")
    })
}

fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    Ok(match name {
        "KILL" => libc::SIGKILL,
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "QUIT" => libc::SIGQUIT,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => {
            return Err(format!(
                "unknown signal {s:?}: use a number or KILL, TERM, INT, HUP, QUIT, USR1, USR2"
            ));
        }
    })
}

/// `cella ns ls`.
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Only namespaces of these types (mnt, net, ipc, user, pid, uts, cgroup, time).
    #[arg(short = 't', long = "type", value_name = "TYPE", value_delimiter = ',', value_parser = parse_type)]
    types: Vec<NsType>,
    /// Only the namespaces of this process.
    #[arg(short = 'p', long = "pid", visible_alias = "task", value_name = "PID")]
    pid: Option<i32>,
    /// Only the namespaces of this cella container.
    #[arg(long, value_name = "ID")]
    container: Option<String>,
    /// Print JSON (keys as lsns: ns, type, nprocs, pid, user, command, plus container).
    #[arg(short = 'J', long)]
    json: bool,
    /// Show user-namespace ownership and the pid-namespace hierarchy as a tree.
    #[arg(short = 'T', long)]
    tree: bool,
}

/// `cella ns enter`.
#[derive(clap::Args, Debug)]
pub struct EnterArgs {
    /// Target: a pid, or a cella container id.
    #[arg(short = 't', long, value_name = "PID|CONTAINER")]
    target: String,
    /// Enter the mount namespace.
    #[arg(short = 'm', long)]
    mount: bool,
    /// Enter the UTS namespace.
    #[arg(short = 'u', long)]
    uts: bool,
    /// Enter the IPC namespace.
    #[arg(short = 'i', long)]
    ipc: bool,
    /// Enter the network namespace.
    #[arg(short = 'n', long)]
    net: bool,
    /// Enter the pid namespace (the command runs in a forked child).
    #[arg(short = 'p', long)]
    pid: bool,
    /// Enter the cgroup namespace.
    #[arg(short = 'C', long)]
    cgroup: bool,
    /// Enter the user namespace (first, before the others).
    #[arg(short = 'U', long)]
    user: bool,
    /// Enter the time namespace (the command runs in a forked child).
    #[arg(short = 'T', long)]
    time: bool,
    /// Enter all namespaces of the target (the default when no type is given).
    #[arg(short = 'a', long)]
    all: bool,
    /// Root directory: the target's (no value), or DIR (a path here). Default: the
    /// target's when entering its mount namespace.
    #[arg(short = 'r', long = "root-dir", value_name = "DIR", num_args = 0..=1, require_equals = true)]
    root_dir: Option<Option<PathBuf>>,
    /// Working directory: the target's (no value), or DIR (inside the new root). Default:
    /// the target's when entering its mount namespace.
    #[arg(short = 'w', long = "wd", value_name = "DIR", num_args = 0..=1, require_equals = true)]
    wd: Option<Option<PathBuf>>,
    /// Keep uid, gid and groups when entering a user namespace (default: become 0/0).
    #[arg(long = "preserve-credentials")]
    preserve_credentials: bool,
    /// Uid to run the command as.
    #[arg(short = 'S', long = "setuid", value_name = "UID")]
    uid: Option<u32>,
    /// Gid to run the command as.
    #[arg(short = 'G', long = "setgid", value_name = "GID")]
    gid: Option<u32>,
    /// Command and arguments (default: $SHELL or /bin/sh).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

fn parse_type(s: &str) -> Result<NsType, String> {
    NsType::from_name(s).ok_or_else(|| {
        format!("unknown namespace type {s:?}: use mnt, net, ipc, user, pid, uts, cgroup or time")
    })
}

fn named_dirs(cli: &Cli) -> NamedDirs {
    NamedDirs {
        netns: "/run/netns".into(),
        base: state_root(cli).join("ns"),
    }
}

fn unshare(a: &UnshareArgs) -> CmdResult {
    let opts = UnshareOptions {
        types: a.types.set(),
        map_user: a.map_user.or(a.map_root_user.then_some(0)),
        map_group: a.map_group.or(a.map_root_user.then_some(0)),
        map_auto: a.map_auto,
        monotonic: a.monotonic,
        boottime: a.boottime,
        fork: a.fork,
        mount_proc: a.mount_proc.clone(),
        propagation: a.propagation,
        kill_child: a.kill_child,
        root: a.root.clone(),
        wd: a.wd.clone(),
        persist: a.persist.clone(),
        command: a.command.clone(),
    };
    Ok(cella_ns::unshare(&opts)?)
}

fn state_root(cli: &Cli) -> PathBuf {
    cli.root
        .clone()
        .unwrap_or_else(|| PathBuf::from("/run/cella"))
}

/// Runs a `cella ns` verb.
pub fn run(cmd: &NsCommand, cli: &Cli) -> CmdResult {
    match cmd {
        NsCommand::Ls(a) => ls(a, cli),
        NsCommand::Enter(a) => enter(a, cli),
        NsCommand::Unshare(a) => unshare(a),
        NsCommand::Create(a) => {
            let mut types = a.types.set();
            if types.is_empty() {
                types.insert(NsType::Net);
            }
            cella_ns::create(&a.name, types, &named_dirs(cli))?;
            Ok(0)
        }
        NsCommand::Rm(a) => {
            let dirs = named_dirs(cli);
            for name in &a.names {
                cella_ns::remove(name, &dirs)?;
            }
            Ok(0)
        }
    }
}

fn ls(a: &LsArgs, cli: &Cli) -> CmdResult {
    let types = if a.types.is_empty() {
        NsSet::all()
    } else {
        a.types.iter().copied().collect()
    };
    let opts = ListOptions {
        types,
        pid: a.pid,
        container: a.container.clone(),
        state_root: state_root(cli),
        relations: a.tree,
    };
    let list = cella_ns::list(&opts)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let namespaces = list.iter().map(|n| n.json_record(a.tree)).collect();
        let doc = cella_ns::list::JsonListing { namespaces };
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else if a.tree {
        print_tree(&mut out, &list)?;
    } else {
        print_table(&mut out, &list, &[])?;
    }
    Ok(0)
}

fn cells(n: &Namespace, prefix: &str) -> [String; 7] {
    let opt = |o: Option<String>| o.unwrap_or_default();
    [
        format!("{prefix}{}", n.ino),
        n.kind.name().to_string(),
        n.nprocs.to_string(),
        opt(n.pid.map(|p| p.to_string())),
        opt(n.user.clone()),
        match (&n.command, &n.nsfs) {
            (Some(c), _) => c.clone(),
            (None, Some(p)) => format!("(bind mount {})", p.display()),
            (None, None) => {
                n.fd.map(|(p, f)| format!("(fd {f} of pid {p})"))
                    .unwrap_or_default()
            }
        },
        opt(n.container.clone()),
    ]
}

/// Prints an lsns-style table; `prefixes` (tree drawing) is parallel to `list` when given.
fn print_table(
    out: &mut impl Write,
    list: &[Namespace],
    prefixes: &[String],
) -> std::io::Result<()> {
    let head = [
        "NS",
        "TYPE",
        "NPROCS",
        "PID",
        "USER",
        "COMMAND",
        "CONTAINER",
    ];
    let rows: Vec<[String; 7]> = list
        .iter()
        .enumerate()
        .map(|(i, n)| cells(n, prefixes.get(i).map_or("", String::as_str)))
        .collect();
    let mut w = head.map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let right = |i: usize| (i == 0 && prefixes.is_empty()) || i == 2 || i == 3;
    let line = |r: &[String]| {
        let mut s = String::new();
        for (i, c) in r.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if i > 0 {
                s.push(' ');
            }
            if right(i) {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else if i + 1 == r.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            }
        }
        s.trim_end().to_string()
    };
    let head: Vec<String> = head.iter().map(|h| h.to_string()).collect();
    writeln!(out, "{}", line(&head))?;
    for r in &rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(())
}

/// Tree: user namespaces nest under their parent, every other namespace under its owner,
/// and a pid namespace under its parent pid namespace when both share that owner.
fn print_tree(out: &mut impl Write, list: &[Namespace]) -> std::io::Result<()> {
    let by_ino: HashMap<u64, usize> = list.iter().enumerate().map(|(i, n)| (n.ino, i)).collect();
    let parent_of = |n: &Namespace| -> Option<u64> {
        let up = match n.kind {
            NsType::User => n.parent,
            NsType::Pid => match n.parent.and_then(|p| by_ino.get(&p)) {
                Some(&pi) if list[pi].owner == n.owner => n.parent,
                _ => n.owner,
            },
            _ => n.owner,
        };
        up.filter(|u| by_ino.contains_key(u) && *u != n.ino)
    };
    let mut children: HashMap<Option<u64>, Vec<usize>> = HashMap::new();
    for (i, n) in list.iter().enumerate() {
        children.entry(parent_of(n)).or_default().push(i);
    }
    let mut order = Vec::new();
    let mut prefixes = Vec::new();
    fn walk(
        key: Option<u64>,
        indent: &str,
        list: &[Namespace],
        children: &HashMap<Option<u64>, Vec<usize>>,
        order: &mut Vec<Namespace>,
        prefixes: &mut Vec<String>,
    ) {
        let Some(kids) = children.get(&key) else {
            return;
        };
        // User namespaces last, so a user namespace's subtree follows its own entries.
        let mut kids = kids.clone();
        kids.sort_by_key(|&i| (list[i].kind == NsType::User, list[i].ino));
        for (k, &i) in kids.iter().enumerate() {
            let last = k + 1 == kids.len();
            let (branch, cont) = match (key, last) {
                (None, _) => ("", ""),
                (Some(_), false) => ("├─", "│ "),
                (Some(_), true) => ("└─", "  "),
            };
            order.push(list[i].clone());
            prefixes.push(format!("{indent}{branch}"));
            let next = format!("{indent}{cont}");
            walk(Some(list[i].ino), &next, list, children, order, prefixes);
        }
    }
    walk(None, "", list, &children, &mut order, &mut prefixes);
    print_table(out, &order, &prefixes)
}

fn enter(a: &EnterArgs, cli: &Cli) -> CmdResult {
    let pid = cella_ns::resolve_target(&a.target, &state_root(cli))?;
    let flags = [
        (a.mount, NsType::Mnt),
        (a.uts, NsType::Uts),
        (a.ipc, NsType::Ipc),
        (a.net, NsType::Net),
        (a.pid, NsType::Pid),
        (a.cgroup, NsType::Cgroup),
        (a.user, NsType::User),
        (a.time, NsType::Time),
    ];
    let mut types: NsSet = flags
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, t)| *t)
        .collect();
    if a.all || types.is_empty() {
        types = NsSet::all();
    }
    let dir = |d: &Option<Option<PathBuf>>| {
        d.as_ref().map(|p| match p {
            None => DirChoice::Target,
            Some(p) => DirChoice::Path(p.clone()),
        })
    };
    let opts = EnterOptions {
        pid,
        types,
        root: dir(&a.root_dir),
        wd: dir(&a.wd),
        preserve_credentials: a.preserve_credentials,
        uid: a.uid,
        gid: a.gid,
        command: a.command.clone(),
    };
    Ok(cella_ns::enter(&opts)?)
}
