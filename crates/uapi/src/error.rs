//! The uapi error type.
//!
//! Owns: [`Error`], the one error enum of this crate, and [`WireError`], the
//! errno + message + seq that a malformed or refused message turns into on
//! the wire (S20.2/4–5). Every error can say which errno it stands for, so
//! the data plane can answer with it and the CLI can print it.

use std::time::Duration;

pub type Result<T> = std::result::Result<T, Error>;

/// A message that could not be accepted, as it will be reported to the peer:
/// a positive errno, a human-readable message and the seq of the message it
/// answers (0 when the header was unreadable).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", errno_name(*errno))]
pub struct WireError {
    /// Positive errno (`libc::EINVAL`, ...).
    pub errno: i32,
    pub message: String,
    /// Seq of the offending message, 0 when the header was unreadable.
    pub seq: u32,
    /// Command/event id of the offending message, 0 when unreadable.
    pub id: u16,
}

impl WireError {
    pub fn new(errno: i32, message: impl Into<String>) -> WireError {
        WireError {
            errno,
            message: message.into(),
            seq: 0,
            id: 0,
        }
    }

    pub fn invalid(message: impl Into<String>) -> WireError {
        WireError::new(libc::EINVAL, message)
    }

    /// Attach the header's seq and id once they are known.
    pub fn at(mut self, seq: u32, id: u16) -> WireError {
        self.seq = seq;
        self.id = id;
        self
    }
}

/// The error enum of the uapi crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message received from the peer was malformed (or, for the server,
    /// a request it must refuse before acting on it).
    #[error("malformed message: {0}")]
    Wire(#[from] WireError),
    /// The peer answered with an error reply (ERRNO + ERROR_MSG).
    #[error("{}: {message}", errno_name(*errno))]
    Remote { errno: i32, message: String },
    /// A message could not be encoded (attribute or message too large,
    /// interior NUL in a string).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// A socket operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// No reply arrived in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection was closed, by the peer or by a close handle.
    #[error("connection closed")]
    Closed,
    /// Anything else (also used by the managed-pool helpers).
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The positive errno this error stands for.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Wire(w) => w.errno,
            Error::Remote { errno, .. } => *errno,
            Error::Encode(_) => libc::EMSGSIZE,
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::Timeout(_) => libc::ETIMEDOUT,
            Error::Closed => libc::ECONNRESET,
            Error::Other(_) => libc::EIO,
        }
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Error {
        Error::io("socket", e.into())
    }
}

/// The Linux name of an errno (`EINVAL`), if it is one smoothfs uses.
pub fn errno_str(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENODATA => "ENODATA",
        libc::EPROTO => "EPROTO",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ESTALE => "ESTALE",
        libc::ECANCELED => "ECANCELED",
        libc::EDQUOT => "EDQUOT",
        libc::ELOOP => "ELOOP",
        _ => return None,
    })
}

/// The Linux name of an errno (`EINVAL`), or `errno N` for ones not listed.
pub fn errno_name(errno: i32) -> String {
    errno_str(errno).map_or_else(|| format!("errno {errno}"), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::EINVAL), "EINVAL");
        assert_eq!(errno_name(libc::ELOOP), "ELOOP");
        assert_eq!(errno_str(libc::EDQUOT), Some("EDQUOT"));
        assert_eq!(errno_str(4095), None);
        assert_eq!(errno_name(4095), "errno 4095");
    }
}
