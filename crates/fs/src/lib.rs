//! smoothfs data plane: one POSIX namespace over up to 8 tier directories.
//!
//! The filesystem logic lives in modules that do not depend on `fuser`
//! (so tests can drive it without a mount); [`fuse`] is the thin adapter.

pub mod control;
pub mod error;
pub mod fuse;
pub mod health;
pub mod heat;
pub mod index;
pub mod journal;
pub mod live;
pub mod marker;
pub mod mount;
pub mod movement;
pub mod namespace;
pub mod oid;
pub mod options;
pub mod placement;
pub mod probe;
pub mod prune;
pub mod scrub;
pub mod sys;
pub mod tier;

pub use error::{Error, Result};
