//! smoothfs control plane: SQLite store, heat aggregation, planner, worker,
//! recovery. It decides *which* object moves; it never swaps an object's
//! authoritative lower file itself (that is the data plane's cutover).
