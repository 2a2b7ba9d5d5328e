//! OCI runtime: an OCI bundle (config.json + rootfs) to a container's lifecycle, with a
//! state store under a root directory and the spec's hooks. The kernel work is in
//! `cella-isolate`; this crate decides what to do and in which order.

pub mod config;
pub mod container;
pub mod error;
pub mod exec;
pub mod features;
pub mod hooks;
mod init;
pub mod network;
pub mod ops;
mod resources;
mod rootless;
pub mod spec;
pub mod state;
mod tty;

pub use container::{CreateOptions, Runtime, Warnings};
pub use error::{Error, Result};

/// `e` followed by each of its sources, joined by ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        cur = s.source();
    }
    msg
}

/// For a child reporting a failure as (errno, text): the errno of the innermost OS error
/// in `e`'s chain, and the chain's text without that error, which the parent appends
/// again from the errno. Without an OS error, the whole chain and `None`.
pub(crate) fn errno_and_text(e: &dyn std::error::Error) -> (Option<i32>, String) {
    let sources: Vec<&(dyn std::error::Error + 'static)> =
        std::iter::successors(e.source(), |s| s.source()).collect();
    let mut parts = vec![e.to_string()];
    parts.extend(sources.iter().map(|s| s.to_string()));
    let errno = match sources.last() {
        Some(s) => s
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error),
        None => None,
    };
    if errno.is_some() && parts.len() > 1 {
        parts.pop();
    }
    (errno, parts.join(": "))
}

/// The current time in RFC 3339 (UTC, nanoseconds), without a date library.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn errno_and_text_does_not_repeat_the_os_error() {
        #[derive(Debug, thiserror::Error)]
        #[error("mount `/x`")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(
            super::errno_and_text(&e),
            (Some(libc::EPERM), "mount `/x`".to_owned())
        );
        let plain = std::io::Error::other("no errno here");
        assert_eq!(
            super::errno_and_text(&plain),
            (None, "no errno here".to_owned())
        );
    }
    use super::civil_from_days;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
