//! Small file helpers whose errors name the path.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use crate::CgroupError;

/// Read a whole (small) kernel file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Read a file, `None` when it does not exist.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Read a single unsigned number ("max" reads as `u64::MAX`); `None` when the file is absent.
pub(crate) fn read_u64_opt(path: &Path) -> Result<Option<u64>, CgroupError> {
    let Some(s) = read_opt(path)? else {
        return Ok(None);
    };
    parse_u64(path, s.trim()).map(Some)
}

/// Parse one number, "max" meaning unlimited.
pub(crate) fn parse_u64(path: &Path, s: &str) -> Result<u64, CgroupError> {
    if s == "max" {
        return Ok(u64::MAX);
    }
    s.parse::<u64>().map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        reason: format!("expected a number, found {s:?}"),
    })
}

/// Write one value in a single write(2), as cgroup files require.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

/// Parse "key value" lines (memory.stat, cpu.stat, ...) into pairs; lines that are not
/// a key and a number are skipped.
pub(crate) fn parse_flat_keyed(content: &str) -> Vec<(String, u64)> {
    content
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse::<u64>().ok()?;
            Some((k.to_owned(), v))
        })
        .collect()
}
