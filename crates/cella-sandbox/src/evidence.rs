//! Copying a frozen sandbox's writable state into an evidence directory, with a manifest
//! of SHA-256 sums in `sha256sum` format (`sha256sum -c MANIFEST.sha256` checks it).
//!
//! The source is hostile: every name was chosen by the submission. The walk goes through
//! descriptors only (openat with O_NOFOLLOW, directories read through
//! `/proc/self/fd/<n>` of a descriptor opened without following links), so no symlink
//! can lead the copy out of the state directory; symlinks are copied as symlinks.
//! Device nodes, fifos and sockets (and overlayfs whiteouts) are not copied.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::sha256::Sha256;
use crate::sys;

/// The manifest's file name inside the evidence directory.
pub const MANIFEST: &str = "MANIFEST.sha256";

/// An error while keeping evidence.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The evidence directory exists and is not empty, or cannot be made.
    #[error("evidence directory `{}`", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Copying one entry failed.
    #[error("copy `{}` into the evidence", path.display())]
    Copy {
        /// Path relative to the evidence directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The list of files left out (over the byte budget), `size  path` per line.
pub const SKIPPED: &str = "SKIPPED";

/// What was kept: number of files and bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    /// Regular files copied.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Regular files left out because they did not fit in the budget.
    pub skipped: u64,
}

/// The walk's state: where to, what was found, what is left of the budget.
struct Walk<'a> {
    dest: &'a Path,
    manifest: Vec<(PathBuf, String)>,
    skipped: Vec<(PathBuf, u64)>,
    kept: Kept,
    budget: u64,
}

/// Creates `dir` (it may exist if empty): checked before the run starts, so a bad
/// directory is an error before anything runs.
pub fn prepare_dir(dir: &Path) -> Result<(), EvidenceError> {
    let err = |source| EvidenceError::Dir {
        path: dir.to_owned(),
        source,
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "is not empty",
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err),
        Err(e) => Err(err(e)),
    }
}

/// Copies `state/<name>` for each `(name, label)` into `dest/<label>` and writes the
/// manifest. At most `budget` bytes of file contents are copied (a sparse file can claim
/// any size on a tmpfs): files that do not fit are listed in `SKIPPED` instead.
pub fn keep(
    state: BorrowedFd<'_>,
    parts: &[(&str, &str)],
    dest: &Path,
    budget: u64,
) -> Result<Kept, EvidenceError> {
    let mut w = Walk {
        dest,
        manifest: Vec::new(),
        skipped: Vec::new(),
        kept: Kept::default(),
        budget,
    };
    for (name, label) in parts {
        let cname = CString::new(*name).unwrap_or_default();
        let Ok(src) = sys::openat(
            state,
            &cname,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        ) else {
            continue;
        };
        let rel = PathBuf::from(label);
        mkdir(dest, &rel)?;
        copy_dir(src.as_fd(), &rel, &mut w)?;
    }
    let mut text = String::new();
    w.manifest.sort();
    for (path, hash) in &w.manifest {
        text.push_str(&manifest_line(path, hash));
    }
    std::fs::write(dest.join(MANIFEST), text).map_err(|source| EvidenceError::Copy {
        path: PathBuf::from(MANIFEST),
        source,
    })?;
    if !w.skipped.is_empty() {
        let text: String = w
            .skipped
            .iter()
            .map(|(p, size)| format!("{size}  {}\n", p.to_string_lossy().escape_debug()))
            .collect();
        std::fs::write(dest.join(SKIPPED), text).map_err(|source| EvidenceError::Copy {
            path: PathBuf::from(SKIPPED),
            source,
        })?;
    }
    let kept = w.kept;
    Ok(kept)
}

/// One line as `sha256sum` writes it (a name with `\` or a newline is escaped and the
/// line starts with `\`).
fn manifest_line(path: &Path, hash: &str) -> String {
    let name = path.to_string_lossy();
    if name.contains(['\\', '\n', '\r']) {
        let esc = name
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        format!("\\{hash}  {esc}\n")
    } else {
        format!("{hash}  {name}\n")
    }
}

fn mkdir(dest: &Path, rel: &Path) -> Result<(), EvidenceError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dest.join(rel))
        .map_err(|source| EvidenceError::Copy {
            path: rel.to_owned(),
            source,
        })
}

fn copy_dir(dir: BorrowedFd<'_>, rel: &Path, w: &mut Walk<'_>) -> Result<(), EvidenceError> {
    let err = |path: PathBuf| move |source| EvidenceError::Copy { path, source };
    let listing = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let entries = std::fs::read_dir(&listing).map_err(err(rel.to_owned()))?;
    for entry in entries {
        let entry = entry.map_err(err(rel.to_owned()))?;
        let name = entry.file_name();
        let child_rel = rel.join(&name);
        let cname = CString::new(name.as_bytes()).unwrap_or_default();
        let (mode, size) = sys::lstatat(dir, &cname).map_err(err(child_rel.clone()))?;
        match mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let sub = sys::openat(
                    dir,
                    &cname,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(err(child_rel.clone()))?;
                mkdir(w.dest, &child_rel)?;
                copy_dir(sub.as_fd(), &child_rel, w)?;
            }
            libc::S_IFREG if size > w.budget => w.skipped.push((child_rel, size)),
            libc::S_IFREG => {
                // O_NONBLOCK: should the entry have become a fifo, the open cannot hang.
                let f = sys::openat(
                    dir,
                    &cname,
                    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
                    0,
                )
                .map_err(err(child_rel.clone()))?;
                let (hash, n) = copy_file(f, &w.dest.join(&child_rel), w.budget)
                    .map_err(err(child_rel.clone()))?;
                w.budget = w.budget.saturating_sub(n);
                w.kept.files += 1;
                w.kept.bytes += n;
                w.manifest.push((child_rel, hash));
            }
            libc::S_IFLNK => {
                let target = sys::readlinkat(dir, &cname).map_err(err(child_rel.clone()))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), w.dest.join(&child_rel))
                    .map_err(err(child_rel.clone()))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Copies at most `limit` bytes (the file is frozen: its size was checked against it).
fn copy_file(src: OwnedFd, to: &Path, limit: u64) -> io::Result<(String, u64)> {
    let mut src = File::from(src);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    while total < limit {
        let want = buf.len().min((limit - total) as usize);
        let n = src.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((hash.finish_hex(), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_escapes_like_sha256sum() {
        assert_eq!(manifest_line(Path::new("work/a"), "00"), "00  work/a\n");
        assert_eq!(
            manifest_line(Path::new("work/a\nb"), "00"),
            "\\00  work/a\\nb\n"
        );
    }
}
