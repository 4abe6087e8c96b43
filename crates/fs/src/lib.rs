//! smoothfs data plane: one POSIX namespace over up to 8 tier directories.
//!
//! The filesystem logic lives in modules that do not depend on `fuser`
//! (so tests can drive it without a mount); [`fuse`] is the thin adapter.

pub mod error;
pub mod marker;
pub mod options;
pub mod probe;

pub use error::{Error, Result};
