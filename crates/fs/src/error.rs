//! The data-plane error type: an errno (what FUSE or the wire sees) plus a
//! message with operator context (which tier, which rel_path).

use std::fmt;

/// An error that carries the errno reported to FUSE / the control socket and
/// a human-readable message for the operator.
#[derive(Debug)]
pub struct Error {
    pub errno: i32,
    pub msg: String,
    pub source: Option<std::io::Error>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(errno: i32, msg: impl Into<String>) -> Self {
        Error {
            errno,
            msg: msg.into(),
            source: None,
        }
    }

    /// Wrap an io::Error, keeping its errno (EIO when it has none).
    pub fn io(context: impl Into<String>, e: std::io::Error) -> Self {
        Error {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
            msg: context.into(),
            source: Some(e),
        }
    }

    /// Linux name of the errno ("EINVAL"), for `smoothfs: mount failed: X: msg`.
    pub fn errno_name(&self) -> &'static str {
        errno_name(self.errno)
    }
}

/// `err!(libc::ENOENT, "no tier holds {}", path)`
#[macro_export]
macro_rules! err {
    ($errno:expr, $($arg:tt)*) => { $crate::error::Error::new($errno, format!($($arg)*)) };
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.msg)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::io("lower I/O", e)
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Self {
        Error::new(e.raw_os_error(), "lower I/O")
    }
}

pub fn errno_name(errno: i32) -> &'static str {
    smoothfs_uapi::error::errno_str(errno).unwrap_or("EUNKNOWN")
}

#[cfg(test)]
mod tests {
    #[test]
    fn errno_names_come_from_the_uapi_list() {
        assert_eq!(super::errno_name(libc::ENOTEMPTY), "ENOTEMPTY");
        assert_eq!(super::errno_name(4095), "EUNKNOWN");
    }
}
