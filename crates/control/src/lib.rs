//! smoothfs control plane: SQLite store, heat aggregation, planner, worker,
//! recovery. It decides *which* object moves; it never swaps an object's
//! authoritative lower file itself (that is the data plane's cutover).
//!
//! Modules so far:
//! - [`copy`]: copying one lower file into a staging file with its
//!   metadata, and verifying it (S10.3, S10.4); needs no mount.
//! - [`dataplane`]: typed wrappers for the pool-socket commands the worker
//!   uses (INSPECT, RESOLVE_PATH, STATUS, MOVE_*, REVOKE_MAPPINGS).
//! - [`worker`]: one move, steps W1–W12 of S10.2, reporting every
//!   transition to a [`worker::MoveObserver`].
//! - [`lun`]: the active-LUN workflow (S18.2, S18.3): target controllers,
//!   prepare, the worker's W3/W11 hooks and the rollback.
//! - [`config`]: the `control_plane_config` keys of S29.2 and the retry
//!   schedule of S9.5.
//! - [`store`]: the SQLite store of S22.1 (schema, migrations, pools,
//!   object rows, movement log) and the timestamp format.
//! - [`heat`]: EWMA and heat-now (S7.1–S7.3).
//! - [`planner`]: the pure planning pass of S22.3–S22.6.
//! - [`daemon`]: the control-plane daemon (threads, planner tick, control
//!   API); [`discovery`], [`recovery`], [`inventory`] and [`workers`] are
//!   its parts, [`storeext`] the few row updates it adds to the store.

pub mod config;
pub mod copy;
pub mod daemon;
pub mod dataplane;
pub mod discovery;
pub mod heat;
pub mod inventory;
pub mod lun;
pub mod metrics;
pub mod pinrules;
pub mod planner;
pub mod recovery;
pub mod store;
pub mod storeext;
pub mod worker;
pub mod workers;
