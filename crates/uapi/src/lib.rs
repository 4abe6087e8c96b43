//! The smoothfs control contract, shared by the data plane and the control
//! plane. It owns every number that crosses the boundary (commands, events,
//! attributes, movement and pin states), the TLV codec, the 56-byte heat
//! record, event decoding, the blocking [`client::Client`] and the
//! managed-pool (systemd) helpers. It depends on neither FUSE nor SQLite.

pub mod client;
pub mod codec;
pub mod error;
pub mod event;
pub mod failpoint;
pub mod heat;
pub mod ids;
pub mod managed;

pub use error::{Error, Result};
