//! TODO(helper): see crates/uapi/src/lib.rs
