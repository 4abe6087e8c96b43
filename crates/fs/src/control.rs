//! The pool's control socket (SPEC S20): a Unix SOCK_SEQPACKET listener,
//! one thread per connection, request dispatch and event fan-out.
//!
//! Owns: the socket file (created at mount, removed at unmount), per-request
//! permission checks from `SO_PEERCRED` (S20.1/2), the POOL_UUID rules
//! (S20.3), the commands the data plane answers without the movement engine
//! (STATUS, SET_TUNABLE, INSPECT, RESOLVE_PATH, REPROBE, SUBSCRIBE) and the
//! subscriber queues (S20.5).
//!
//! Must never: panic or close a connection because of what a peer sent
//! (S20.2/5); every malformed or refused request gets exactly one error
//! reply with the request's seq. Every blocking call is a `poll` of at most
//! [`TICK`] that rechecks the stop flag, so [`Server::shutdown`] returns
//! promptly and no thread outlives the mount holding the namespace.
//!
//! Layering: [`EventHub`] holds no reference to the namespace, so the FUSE
//! adapter's spill hook can own it without keeping the namespace alive.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use smoothfs_uapi::codec::{Header, MessageBuilder, Request, decode_request, encode_error_reply};
use smoothfs_uapi::error::WireError;
use smoothfs_uapi::event::{Event, MountReady, ObjectEntry, Spill, StatusItem, TierInfo, fsid_for};
use smoothfs_uapi::ids::{
    Attr, Command, EVENT_MASK_ALL, EventId, MAX_MESSAGE_LEN, MovementState, ObjectKind,
    PROTOCOL_VERSION, PinState, PolicyPin, TierCaps, TierState,
};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::namespace::{KIND_DIR, Namespace, Node, SpillRecord};
use crate::oid::{Oid, ROOT_INO};
use crate::placement::{ObjectRec, state};
use crate::sys;

/// At most this many connections per pool (S20.1/3, `max_control_clients`).
pub const MAX_CONTROL_CLIENTS: usize = 64;
/// Events queued per subscriber before they are dropped (S20.5).
pub const EVENT_QUEUE_LEN: usize = 4096;
/// Longest single wait before a thread rechecks the stop flag.
pub const TICK: Duration = Duration::from_millis(250);
/// Message of every command that needs the movement engine.
pub const NOT_YET: &str = "not implemented yet";
/// Slot value meaning "no tier" in the index.
const NO_SLOT: u8 = 0xFF;

type Reply = std::result::Result<MessageBuilder, WireError>;

fn fs_err(e: Error) -> WireError {
    WireError::new(e.errno, e.to_string())
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

struct SubQueue {
    events: VecDeque<Event>,
    /// Events were dropped since the last delivered one.
    lost: bool,
}

/// One subscription's queue (S20.5).
pub struct Subscriber {
    mask: u64,
    queue: Mutex<SubQueue>,
    cv: Condvar,
}

impl Subscriber {
    /// Wait up to `timeout` for queued events; returns them with the LOSS
    /// flag to put on the first one.
    fn take(&self, timeout: Duration) -> (Vec<Event>, bool) {
        let mut q = self.queue.lock();
        if q.events.is_empty() {
            self.cv.wait_for(&mut q, timeout);
        }
        let lost = std::mem::take(&mut q.lost);
        (q.events.drain(..).collect(), lost)
    }
}

/// Event fan-out to every subscriber; independent of the namespace.
pub struct EventHub {
    pool_uuid: Uuid,
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
    dropped: AtomicU64,
    ready: Mutex<bool>,
    ready_cv: Condvar,
}

impl EventHub {
    pub fn new(pool_uuid: Uuid) -> Arc<EventHub> {
        Arc::new(EventHub {
            pool_uuid,
            subscribers: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            ready: Mutex::new(false),
            ready_cv: Condvar::new(),
        })
    }

    /// Make MOUNT_READY available to subscribers (S1.9: after the pool
    /// record is written).
    pub fn set_ready(&self) {
        *self.ready.lock() = true;
        self.ready_cv.notify_all();
    }

    fn wait_ready(&self, timeout: Duration) -> bool {
        let mut r = self.ready.lock();
        if !*r {
            self.ready_cv.wait_for(&mut r, timeout);
        }
        *r
    }

    /// Events dropped on full subscriber queues (`events_dropped_total`).
    pub fn events_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.lock().len()
    }

    fn register(&self, mask: u64) -> Arc<Subscriber> {
        let s = Arc::new(Subscriber {
            mask,
            queue: Mutex::new(SubQueue {
                events: VecDeque::new(),
                lost: false,
            }),
            cv: Condvar::new(),
        });
        self.subscribers.lock().push(Arc::clone(&s));
        s
    }

    fn unregister(&self, s: &Arc<Subscriber>) {
        self.subscribers.lock().retain(|x| !Arc::ptr_eq(x, s));
    }

    /// Queue `ev` for every subscriber whose mask selects it; a full queue
    /// drops it and marks LOSS on the next delivered event. Returns how many
    /// subscribers took it.
    pub fn publish(&self, ev: &Event) -> usize {
        let bit = EventId::from_number(ev.id()).map_or(0, EventId::mask_bit);
        self.enqueue(ev, bit, true)
    }

    /// A heat event: queued only where it fits, never marking LOSS, so
    /// undelivered deltas stay in the counters (S6.3 item 3). Returns how
    /// many subscribers took it.
    pub fn publish_heat(&self, ev: &Event) -> usize {
        self.enqueue(ev, EventId::HeatSample.mask_bit(), false)
    }

    /// Queue `ev` for every subscriber whose mask has `bit`. A full queue
    /// drops it; with `mark_loss` the drop is counted and LOSS marked on
    /// the next delivered event. Returns how many subscribers took it.
    fn enqueue(&self, ev: &Event, bit: u64, mark_loss: bool) -> usize {
        let mut taken = 0;
        for s in self.subscribers.lock().iter() {
            if s.mask & bit == 0 {
                continue;
            }
            let mut q = s.queue.lock();
            if q.events.len() >= EVENT_QUEUE_LEN {
                if mark_loss {
                    q.lost = true;
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            q.events.push_back(ev.clone());
            drop(q);
            s.cv.notify_one();
            taken += 1;
        }
        taken
    }

    pub fn pool_uuid(&self) -> Uuid {
        self.pool_uuid
    }

    /// TIER_FAULT or TIER_RESUMED for a tier state change (S23).
    pub fn tier_event(&self, pool_name: &str, any_spill: bool, e: &crate::health::TierEvt) {
        let state = tier_state(e.state);
        let ev = if e.resumed {
            Event::TierResumed(smoothfs_uapi::event::TierResumed {
                pool_uuid: self.pool_uuid,
                tier_rank: e.rank,
                tier_state: state,
            })
        } else {
            Event::TierFault(smoothfs_uapi::event::TierFault {
                pool_uuid: self.pool_uuid,
                pool_name: pool_name.to_string(),
                fsid: fsid_for(&self.pool_uuid),
                any_spill_since_mount: any_spill,
                tier_rank: e.rank,
                tier_state: state,
                fault_errno: u32::try_from(e.errno).unwrap_or(0),
            })
        };
        let _ = self.publish(&ev);
    }

    /// The SPILL event for a released spilled create (S5.2).
    pub fn spill(&self, rec: &SpillRecord) {
        let _ = self.publish(&Event::Spill(Spill {
            pool_uuid: self.pool_uuid,
            any_spill_since_mount: true,
            oid: rec.oid.0,
            first_tier: rec.first_rank,
            landed_tier: rec.used_rank,
            size_bytes: rec.size,
            rel_path: PathBuf::from(&rec.rel_path),
        }));
    }
}

// ---------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------

/// One heat drain (S6.3): every changed object's record goes out in
/// HEAT_SAMPLE events of at most 256 records; chunks no subscriber took
/// stay in the counters for the next drain.
pub fn drain_heat(ns: &Namespace, hub: &EventHub) -> crate::heat::DrainReport {
    ns.heat
        .drain_and_deliver(crate::heat::wall_clock_ns(), |recs| {
            hub.publish_heat(&Event::HeatSample(smoothfs_uapi::event::HeatSample {
                pool_uuid: hub.pool_uuid(),
                records: recs.to_vec(),
            })) > 0
        })
}

/// What the pool knows about itself beyond the namespace.
#[derive(Clone, Debug)]
pub struct PoolInfo {
    pub uuid: Uuid,
    pub name: String,
    /// Tier UUIDs (TIER_ID) by rank.
    pub tier_ids: Vec<String>,
    pub read_only: bool,
    /// Mount-option values reported as status items.
    pub heat_interval_ms: u32,
    pub write_staging: bool,
    pub mediated_comm: Vec<String>,
    /// Where the pool is mounted (lease breaks open files through it).
    pub mountpoint: Option<PathBuf>,
}

/// What a request turns into.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this reply and keep serving requests.
    Reply(Vec<u8>),
    /// Send this reply; the connection then carries only events selected
    /// by `mask` (S20.4 SUBSCRIBE).
    Subscribe { reply: Vec<u8>, mask: u64 },
}

impl Outcome {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Outcome::Reply(b) => b,
            Outcome::Subscribe { reply, .. } => reply,
        }
    }
}

/// The request handler of one pool.
pub struct Control {
    ns: Arc<Namespace>,
    info: PoolInfo,
    hub: Arc<EventHub>,
    /// TIER_CAPS by rank; REPROBE refreshes them.
    caps: Mutex<Vec<u32>>,
    mounted_at: Instant,
    /// (last_reconcile_reason, last_reconcile_at in unix seconds).
    reconciled: Mutex<(String, u64)>,
    /// The background scrub (S4.6); its thread is started by the mount.
    pub scrubber: Arc<crate::scrub::Scrubber>,
    /// Tier health checks (S23); ticked by the mount's maintenance thread.
    pub health: Arc<crate::health::Health>,
}

impl Control {
    pub fn new(ns: Arc<Namespace>, info: PoolInfo, hub: Arc<EventHub>) -> Arc<Control> {
        let caps = ns.tiers.iter().map(|t| t.caps).collect();
        let scrubber = Arc::new(crate::scrub::Scrubber::new(&ns));
        let health = Arc::new(crate::health::Health::new(
            info.uuid,
            info.tier_ids
                .iter()
                .map(|s| Uuid::parse_str(s).unwrap_or_default())
                .collect(),
            &ns.tiers,
        ));
        let _ = ns.moves.health.set(Arc::clone(&health));
        Arc::new(Control {
            ns,
            info,
            hub,
            caps: Mutex::new(caps),
            mounted_at: Instant::now(),
            reconciled: Mutex::new((String::new(), 0)),
            scrubber,
            health,
        })
    }

    pub fn hub(&self) -> &Arc<EventHub> {
        &self.hub
    }

    /// Handle one received datagram of `true_len` bytes (more than
    /// `buf.len()` when it was truncated) from a peer with `uid`.
    pub fn handle_received(&self, buf: &[u8], true_len: usize, uid: u32) -> Outcome {
        if true_len > MAX_MESSAGE_LEN || buf.len() > MAX_MESSAGE_LEN {
            let (seq, id) = Header::peek(buf).map_or((0, 0), |h| (h.seq, h.id));
            return Outcome::Reply(encode_error_reply(
                seq,
                id,
                libc::EMSGSIZE,
                &format!("message of {true_len} bytes exceeds {MAX_MESSAGE_LEN}"),
            ));
        }
        self.handle(buf, uid)
    }

    /// Handle one request datagram from a peer with `uid`.
    pub fn handle(&self, buf: &[u8], uid: u32) -> Outcome {
        let req = match decode_request(buf) {
            Ok(r) => r,
            Err(e) => return Outcome::Reply(e.to_reply()),
        };
        let result = self.dispatch(&req, uid);
        let reply = match result {
            Ok(m) => match m.finish() {
                Ok(b) => b,
                Err(e) => req.error_reply(e.errno(), &format!("cannot encode the reply: {e}")),
            },
            Err(e) => req.error_reply(e.errno, &e.message),
        };
        if req.command == Command::Subscribe && !is_error(&reply) {
            let mask = req
                .attrs
                .get_u64(Attr::EventMask)
                .ok()
                .flatten()
                .unwrap_or(EVENT_MASK_ALL);
            return Outcome::Subscribe { reply, mask };
        }
        Outcome::Reply(reply)
    }

    fn dispatch(&self, req: &Request<'_>, uid: u32) -> Reply {
        let cmd = req.command;
        if uid != 0 && cmd != Command::Inspect {
            return Err(WireError::new(
                libc::EPERM,
                format!("{cmd} needs root (peer uid {uid})"),
            ));
        }
        let tier_down_with_attrs = cmd == Command::TierDown && !req.attrs.as_bytes().is_empty();
        if cmd.requires_pool_uuid() || tier_down_with_attrs {
            self.check_pool(req)?;
        }
        match cmd {
            Command::RegisterPool => Ok(req.reply()),
            Command::PolicyPush => Err(WireError::new(
                libc::ENOSYS,
                "POLICY_PUSH is reserved and not implemented",
            )),
            Command::TierDown if !tier_down_with_attrs => Ok(req.reply()),
            Command::Status => self.status(req),
            Command::SetTunable => self.set_tunable(req),
            Command::Inspect => self.inspect(req, uid),
            Command::ResolvePath => self.resolve_path(req),
            Command::Reprobe => self.reprobe(req),
            Command::Subscribe => {
                let mut m = req.reply();
                m.put_u32(Attr::ProtocolVersion, u32::from(PROTOCOL_VERSION));
                Ok(m)
            }
            Command::DirtyRanges => Err(WireError::new(
                libc::ENOSYS,
                "DIRTY_RANGES is reserved and not implemented",
            )),
            Command::MovePlan => self.move_plan(req),
            Command::MoveCutover => self.move_cutover(req),
            Command::MoveAbort => self.move_abort(req),
            Command::MoveCleanup => self.move_cleanup(req),
            Command::RevokeMappings => self.revoke_mappings(req),
            Command::Quiesce => {
                self.ns.quiesce().map_err(fs_err)?;
                info!("pool quiesced");
                Ok(req.reply())
            }
            Command::Reconcile => self.reconcile(req),
            Command::PinSet => self.pin_set(req),
            Command::ListObjects => self.list_objects(req),
            Command::PruneDirs => self.prune_dirs(req),
            Command::Scrub => self.scrub(req),
            Command::TierDown => self.tier_down(req),
            Command::TierResume => self.tier_resume(req),
        }
    }

    /// S20.3/1: POOL_UUID present, 16 bytes, and ours.
    fn check_pool(&self, req: &Request<'_>) -> std::result::Result<(), WireError> {
        let Some(raw) = req.attrs.get(Attr::PoolUuid) else {
            return Err(WireError::invalid(format!(
                "{} needs POOL_UUID",
                req.command
            )));
        };
        let id = raw.as_id16()?;
        if id != *self.info.uuid.as_bytes() {
            return Err(WireError::new(
                libc::ENODEV,
                format!(
                    "pool {} is not this pool ({})",
                    Uuid::from_bytes(id),
                    self.info.uuid
                ),
            ));
        }
        Ok(())
    }

    // ---- TIERS, MOUNT_READY, STATUS ----------------------------------------

    /// The TIERS list (S20.5).
    pub fn tiers(&self) -> Vec<TierInfo> {
        let caps = self.caps.lock().clone();
        self.ns
            .tiers
            .iter()
            .map(|t| TierInfo {
                rank: t.rank,
                caps: TierCaps(caps.get(usize::from(t.rank)).copied().unwrap_or(t.caps)),
                tier_path: t.path.clone(),
                tier_id: self
                    .info
                    .tier_ids
                    .get(usize::from(t.rank))
                    .cloned()
                    .unwrap_or_default(),
                state: tier_state(t.state.load(Ordering::Relaxed)),
                passthrough: t.passthrough.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The MOUNT_READY event as of now.
    pub fn mount_ready(&self) -> Event {
        Event::MountReady(MountReady {
            pool_uuid: self.info.uuid,
            pool_name: self.info.name.clone(),
            fsid: fsid_for(&self.info.uuid),
            any_spill_since_mount: self
                .ns
                .counters
                .any_spill_since_mount
                .load(Ordering::Relaxed)
                != 0,
            tiers: self.tiers(),
            protocol_version: u32::from(PROTOCOL_VERSION),
            journal_seq: self.ns.placement.journal_seq(),
        })
    }

    /// Every status item (S26.1) this data plane can report.
    pub fn status_items(&self) -> Vec<StatusItem> {
        let ns = &self.ns;
        let c = &ns.counters;
        let pc = ns.placement.counters();
        let mut v: Vec<(&str, String)> = Vec::with_capacity(96);
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let tiers = self.tiers();
        let states: Vec<TierState> = tiers.iter().map(|t| t.state).collect();
        // pool
        v.push(("pool_name", self.info.name.clone()));
        v.push(("pool_uuid", self.info.uuid.hyphenated().to_string()));
        v.push(("fsid", format!("0x{:08x}", fsid_for(&self.info.uuid))));
        v.push(("tier_count", ns.tiers.len().to_string()));
        v.push((
            "tiers",
            tiers
                .iter()
                .map(|t| format!("{}:{}", t.rank, t.tier_path.display()))
                .collect::<Vec<_>>()
                .join(","),
        ));
        v.push((
            "tier_states",
            tiers
                .iter()
                .map(|t| format!("{}:{}", t.rank, t.state))
                .collect::<Vec<_>>()
                .join(","),
        ));
        v.push(("read_only", u8::from(self.info.read_only).to_string()));
        let degraded = pc.degraded || states.iter().any(|s| *s != TierState::Ok);
        v.push(("degraded", u8::from(degraded).to_string()));
        v.push((
            "mount_duration_ms",
            self.mounted_at.elapsed().as_millis().to_string(),
        ));
        // placement
        v.push(("spill_creates_total", ld(&c.spill_creates_total)));
        v.push((
            "spill_creates_failed_all_tiers",
            ld(&c.spill_creates_failed_all_tiers),
        ));
        v.push((
            "any_spill_since_mount",
            u8::from(c.any_spill_since_mount.load(Ordering::Relaxed) != 0).to_string(),
        ));
        // namespace
        v.push((
            "metadata_active_tier_mask",
            format!("0x{:x}", ns.metadata_mask.load(Ordering::Relaxed)),
        ));
        v.push((
            "create_disabled_tier_mask",
            format!("0x{:x}", ns.create_disabled_mask.load(Ordering::Relaxed)),
        ));
        v.push(("metadata_tier_skips", ld(&c.metadata_tier_skips)));
        v.push(("metadata_tier_wakes", ld(&c.metadata_tier_wakes)));
        v.push(("inactive_tier_data_opens", ld(&c.inactive_tier_data_opens)));
        v.push(("stale_duplicates_seen", ld(&c.stale_duplicates_seen)));
        v.push(("name_conflicts", ld(&c.name_conflicts)));
        // identity
        v.push(("objects_resident", ns.resident_nodes().to_string()));
        v.push(("oid_restored_total", ld(&c.oid_restored_total)));
        v.push(("oid_collisions", ld(&c.oid_collisions)));
        v.push(("oid_duplicates_total", ld(&c.oid_duplicates_total)));
        v.push(("gen_bumps_total", ld(&c.gen_bumps_total)));
        // journal
        v.push(("journal_seq", ns.placement.journal_seq().to_string()));
        v.push((
            "journal_torn_tail_truncations",
            pc.torn_tail_truncations.to_string(),
        ));
        v.push(("journal_corrupt_records", pc.corrupt_records.to_string()));
        v.push(("replay_records", pc.replay_records.to_string()));
        v.push(("replay_normalised", pc.replay_normalised.to_string()));
        v.push(("journal_records_written", pc.records_written.to_string()));
        v.push(("journal_checkpoints_total", pc.checkpoints.to_string()));
        v.push((
            "journal_durable_checkpoints_total",
            pc.durable_checkpoints.to_string(),
        ));
        v.push(("journal_flusher_errors", pc.flusher_errors.to_string()));
        // handles
        v.push(("passthrough_opens_total", ld(&c.passthrough_opens_total)));
        v.push(("mediated_opens_total", ld(&c.mediated_opens_total)));
        v.push(("mediated_comm", self.info.mediated_comm.join(":")));
        // heat and events
        v.push(("heat_interval_ms", self.info.heat_interval_ms.to_string()));
        v.push((
            "events_dropped_total",
            self.hub.events_dropped().to_string(),
        ));
        // write staging
        v.push((
            "write_staging_enabled",
            u8::from(self.info.write_staging).to_string(),
        ));
        v.push((
            "write_staging_full_pct",
            ns.full_pct.load(Ordering::Relaxed).to_string(),
        ));
        // movement
        let mv = &ns.moves;
        v.push((
            "quiesced",
            u8::from(mv.quiesced.load(Ordering::Relaxed)).to_string(),
        ));
        v.push(("moves_planned_total", ld(&mv.moves_planned_total)));
        v.push(("moves_in_flight", ns.live.moving().to_string()));
        v.push(("cutovers_total", ld(&mv.cutovers_total)));
        v.push(("cutover_failures_total", ld(&mv.cutover_failures_total)));
        v.push(("cutovers_in_flight", ld(&mv.cutovers_in_flight)));
        v.push((
            "cutover_drain_wait_ns_max",
            ld(&mv.cutover_drain_wait_ns_max),
        ));
        v.push(("cutover_ns_last", ld(&mv.cutover_ns_last)));
        v.push(("aborts_total", ld(&mv.aborts_total)));
        v.push(("cleanups_total", ld(&mv.cleanups_total)));
        v.push(("cleanup_failures_total", ld(&mv.cleanup_failures_total)));
        v.push(("auto_cleanups_total", ld(&mv.auto_cleanups_total)));
        v.push(("lease_breaks_total", ld(&mv.lease_breaks_total)));
        v.push(("reissues_total", ld(&mv.reissues_total)));
        v.push(("reissue_failures_total", ld(&mv.reissue_failures_total)));
        v.push(("quarantined_total", ld(&mv.quarantined_total)));
        v.push(("tier_faults_total", ld(&mv.tier_faults_total)));
        v.push((
            "tier_health_interval_ms",
            self.health.interval_ms.load(Ordering::Relaxed).to_string(),
        ));
        v.push(("spill_writes_total", ld(&mv.spill_writes_total)));
        v.push((
            "spill_writes_failed_all_tiers",
            ld(&mv.spill_writes_failed_all_tiers),
        ));
        v.push((
            "passthrough_write_off_pct",
            ld(&mv.passthrough_write_off_pct),
        ));
        v.push(("cutover_drain_timeout_ms", ld(&mv.cutover_drain_timeout_ms)));
        v.push(("cleanup_grace_s", ld(&mv.cleanup_grace_s)));
        v.push(("quiesce_timeout_ms", ld(&mv.quiesce_timeout_ms)));
        let totals = ns.live.totals();
        v.push(("open_passthrough_handles", totals.passthrough.to_string()));
        v.push(("open_mediated_handles", totals.mediated.to_string()));
        v.push(("objects_live", ns.live.len().to_string()));
        {
            let r = self.reconciled.lock();
            v.push(("last_reconcile_reason", r.0.clone()));
            v.push(("last_reconcile_at", r.1.to_string()));
        }
        // heat
        v.push((
            "heat_records_sent_total",
            ns.heat.records_sent_total().to_string(),
        ));
        v.push((
            "heat_records_deferred",
            ns.heat.records_deferred().to_string(),
        ));
        v.push((
            "heat_estimated_bytes_total",
            ns.heat.estimated_bytes_total().to_string(),
        ));
        // Subsystems that are not built yet: their counters are truly zero.
        for name in NOT_BUILT_ZERO {
            v.push((name, "0".to_string()));
        }
        v.into_iter()
            .map(|(n, value)| StatusItem {
                name: n.to_string(),
                value,
            })
            .collect()
    }

    fn status(&self, req: &Request<'_>) -> Reply {
        let items = self.status_items();
        let tiers = self.tiers();
        let mut m = req.reply();
        m.put_list(Attr::StatusItems, &items, |w, i| i.encode(w))
            .put_list(Attr::Tiers, &tiers, |w, t| t.encode(w));
        Ok(m)
    }

    // ---- SET_TUNABLE ------------------------------------------------------

    fn set_tunable(&self, req: &Request<'_>) -> Reply {
        let name = req.attrs.require_str(Attr::Name)?;
        let value = req.attrs.require_str(Attr::Value)?.trim();
        let read_back = match name {
            "metadata_active_tier_mask" => {
                let mask = mask_arg(name, value)?;
                let m = self.ns.set_metadata_mask(mask);
                info!("metadata_active_tier_mask set to 0x{m:x}");
                format!("0x{m:x}")
            }
            "create_disabled_tier_mask" => {
                let mask = mask_arg(name, value)?;
                let all = (1u64 << self.ns.tiers.len()) - 1;
                let m = mask & all;
                self.ns.create_disabled_mask.store(m, Ordering::Relaxed);
                info!("create_disabled_tier_mask set to 0x{m:x}");
                format!("0x{m:x}")
            }
            "write_staging_full_pct" => {
                let pct = decimal_arg(name, value, 1..=100, "is not an integer in 1..=100")?;
                self.ns.full_pct.store(pct, Ordering::Relaxed);
                info!("write_staging_full_pct set to {pct}");
                pct.to_string()
            }
            "scrub_rate" => {
                let rate = decimal_arg(name, value, 0..=u64::MAX, "is not a positive integer")?;
                self.scrubber.set_rate(rate).map_err(fs_err)?.to_string()
            }
            "passthrough_write_off_pct" => {
                let pct = decimal_arg(name, value, 1..=100, "is not an integer in 1..=100")?;
                self.ns
                    .moves
                    .passthrough_write_off_pct
                    .store(pct, Ordering::Relaxed);
                pct.to_string()
            }
            "tier_health_interval_ms" => {
                let v = decimal_arg(name, value, 100..=3_600_000, "is not in 100..=3600000")?;
                self.health.interval_ms.store(v, Ordering::Relaxed);
                v.to_string()
            }
            "cutover_drain_timeout_ms" | "cleanup_grace_s" | "quiesce_timeout_ms" => {
                let v = decimal_arg(name, value, 1..=86_400_000, "is not a positive integer")?;
                let slot = match name {
                    "cutover_drain_timeout_ms" => &self.ns.moves.cutover_drain_timeout_ms,
                    "cleanup_grace_s" => &self.ns.moves.cleanup_grace_s,
                    _ => &self.ns.moves.quiesce_timeout_ms,
                };
                slot.store(v, Ordering::Relaxed);
                info!("{name} set to {v}");
                v.to_string()
            }
            n if RW_NOT_BUILT.contains(&n) => {
                return Err(WireError::new(
                    libc::ENOSYS,
                    format!("tunable {n}: {NOT_YET}"),
                ));
            }
            n if self.status_items().iter().any(|i| i.name == n) => {
                return Err(WireError::new(
                    libc::EPERM,
                    format!("status item {n} is read-only"),
                ));
            }
            n => {
                return Err(WireError::invalid(format!("unknown tunable '{n}'")));
            }
        };
        let mut m = req.reply();
        m.put_str(Attr::Name, name).put_str(Attr::Value, &read_back);
        Ok(m)
    }

    // ---- INSPECT ----------------------------------------------------------

    fn inspect(&self, req: &Request<'_>, uid: u32) -> Reply {
        let oid = Oid(req.attrs.require_id16(Attr::ObjectId)?);
        let ino = oid.ino();
        let rec = self.ns.placement.get(&oid);
        let node = self.ns.resident_node(ino).filter(|n| n.oid == oid);
        if rec.is_none() && node.is_none() {
            return Err(WireError::new(
                libc::ENOENT,
                format!("unknown object {oid}"),
            ));
        }
        let view = self.object_view(&oid, rec.as_ref(), node.as_ref());
        if uid != 0 && view.uid != uid {
            return Err(WireError::new(
                libc::EPERM,
                format!("object {oid} is owned by uid {}, not {uid}", view.uid),
            ));
        }
        let mut m = req.reply();
        let tier_path = self
            .ns
            .tiers
            .get(usize::from(view.current_tier))
            .map(|t| t.path.clone())
            .unwrap_or_default();
        let lower = if view.rel_path.is_empty() {
            tier_path.clone()
        } else {
            let mut p = tier_path.clone().into_os_string();
            p.push("/");
            p.push(OsStr::from_bytes(&view.rel_path));
            PathBuf::from(p)
        };
        m.put_bytes(Attr::ObjectId, &oid.0)
            .put_u8(Attr::ObjectKind, view.kind)
            .put_u64(Attr::Inode, ino)
            .put_u32(Attr::ObjectGen, view.object_gen)
            .put_u8(Attr::CurrentTier, view.current_tier)
            .put_u8(Attr::IntendedTier, view.intended_tier)
            .put_u8(Attr::MovementState, view.movement_state)
            .put_u8(Attr::PinState, view.pin_state.number())
            .put_u8(Attr::PolicyPin, view.policy_pin)
            .put_bool(Attr::Mediated, view.mediated)
            .put_u32(Attr::Generation, view.generation)
            .put_u64(Attr::TransactionSeq, view.transaction_seq)
            .put_u64(Attr::WriteSeq, view.write_seq)
            .put_u8(Attr::RangeStaged, 0)
            .put_str_bytes(Attr::RelPath, &view.rel_path)
            .put_path(Attr::TierPath, &tier_path)
            .put_path(Attr::LowerPath, &lower)
            .put_u64(Attr::SizeBytes, view.size)
            .put_u64(Attr::MtimeNs, view.mtime_ns)
            .put_u32(Attr::Nlink, view.nlink)
            .put_u32(Attr::PassthroughHandles, view.passthrough_handles)
            .put_u32(Attr::MediatedHandles, view.mediated_handles);
        Ok(m)
    }

    /// Combine the index record and the resident node into INSPECT values.
    /// Attributes come from the lower only when the tier is metadata-active;
    /// otherwise from the resident node's cache or the index snapshot.
    fn object_view(&self, oid: &Oid, rec: Option<&ObjectRec>, node: Option<&Node>) -> View {
        let ns = &self.ns;
        let kind = rec.map(|r| r.kind).or(node.map(|n| n.kind)).unwrap_or(4);
        let rank_of_slot = |slot: u8| ns.tier_by_slot(slot).map(|t| t.rank);
        let current = if kind == KIND_DIR {
            0
        } else {
            node.and_then(|n| n.rank)
                .or_else(|| rec.and_then(|r| rank_of_slot(r.slot)))
                .unwrap_or(0)
        };
        let rel_path: Vec<u8> = match (rec, node) {
            (Some(r), _) => r.rel_path.as_bytes().to_vec(),
            (None, Some(n)) => n.rel_path.as_bytes().to_vec(),
            (None, None) => Vec::new(),
        };
        // The live table holds the movement in flight (S9.2); the index
        // agrees with it but the live state is the one gates act on.
        let live = ns.live.get(oid.ino()).filter(|l| l.oid == *oid);
        let lmv = live.as_ref().map(|l| l.mv.lock().clone());
        let movement = match &lmv {
            Some(m) => m.state,
            None => rec.map_or(state::PLACED, |r| r.movement_state),
        };
        let in_plan = movement != state::PLACED;
        let intended = match &lmv {
            Some(m) if in_plan => m.intended,
            _ => rec
                .filter(|_| in_plan)
                .filter(|r| r.intended_slot != NO_SLOT)
                .and_then(|r| rank_of_slot(r.intended_slot))
                .unwrap_or(current),
        };
        let counts = live.as_ref().map(|l| l.counts()).unwrap_or_default();
        let lease = live
            .as_ref()
            .is_some_and(|l| l.lease.load(Ordering::Relaxed));
        // Attributes: fresh from an active tier, else cached, else snapshot.
        let active = ns.metadata_mask.load(Ordering::Relaxed) & (1u64 << current) != 0;
        let mut st: Option<libc::stat> = None;
        if active {
            if node.is_some() || oid.is_root() {
                st = ns.getattr(oid.ino()).ok();
            } else if kind != KIND_DIR
                && let Some(t) = ns.tiers.get(usize::from(current))
            {
                let (p, name) = crate::namespace::split(OsStr::from_bytes(&rel_path));
                st = t
                    .open_dir(&p)
                    .ok()
                    .and_then(|d| sys::fstatat(d.as_fd(), &name).ok());
            }
        }
        if st.is_none() {
            st = node.and_then(|n| n.attr).map(|a| a.to_stat());
        }
        let (size, mtime_ns, uid, nlink) = match (st, rec) {
            (Some(s), _) => (
                u64::try_from(s.st_size).unwrap_or(0),
                u64::try_from(s.st_mtime.saturating_mul(1_000_000_000) + s.st_mtime_nsec)
                    .unwrap_or(0),
                s.st_uid,
                u32::try_from(s.st_nlink).unwrap_or(u32::MAX),
            ),
            (None, Some(r)) => (
                r.attrs.size,
                u64::try_from(r.attrs.mtime_ns).unwrap_or(0),
                r.attrs.uid,
                u32::try_from(r.nlink_names.len().max(1)).unwrap_or(u32::MAX),
            ),
            (None, None) => (0, 0, 0, 1),
        };
        let policy_pin = rec.map_or(0, |r| r.policy_pin);
        let protocol_pin = if lease {
            4
        } else {
            rec.map_or(0, |r| r.protocol_pin)
        };
        // S8.1/2: protocol pin, else pin_hardlink when nlink > 1, else policy.
        let pin_state = if protocol_pin != 0 {
            PinState::from_wire(protocol_pin)
        } else if kind != KIND_DIR && nlink > 1 {
            PinState::PinHardlink
        } else {
            PinState::from_wire(policy_pin)
        };
        View {
            generation: live
                .as_ref()
                .map_or(0, |l| l.cutover_gen.load(Ordering::Relaxed)),
            write_seq: live
                .as_ref()
                .map_or_else(|| ns.live.floor(), |l| l.write_seq.load(Ordering::Relaxed)),
            passthrough_handles: counts.passthrough,
            mediated_handles: counts.mediated,
            kind,
            object_gen: rec
                .map(|r| r.r#gen)
                .or(node.map(|n| n.generation))
                .unwrap_or(0),
            current_tier: current,
            intended_tier: intended,
            movement_state: MovementState::from_wire(movement).number(),
            pin_state,
            policy_pin,
            mediated: rec.is_some_and(|r| r.always_mediated),
            transaction_seq: match &lmv {
                Some(m) if in_plan => m.seq,
                _ if in_plan => rec.map_or(0, |r| r.transaction_seq),
                _ => 0,
            },
            rel_path,
            size,
            mtime_ns,
            uid,
            nlink,
        }
    }

    // ---- movement (S9, S11, S12, S13.3, S15) ------------------------------

    fn move_plan(&self, req: &Request<'_>) -> Reply {
        let oid = Oid(req.attrs.require_id16(Attr::ObjectId)?);
        let dest = req.attrs.require_u8(Attr::IntendedTier)?;
        let seq = req.attrs.require_u64(Attr::TransactionSeq)?;
        let force = req.attrs.get_bool(Attr::Force)?.unwrap_or(false);
        let _hg = req.attrs.get_bool(Attr::HardlinkGroup)?.unwrap_or(false);
        let r = self.ns.move_plan(&oid, dest, seq, force).map_err(fs_err)?;
        let mut m = req.reply();
        m.put_path(Attr::StagingPath, &r.staging_path)
            .put_path(Attr::LowerPath, &r.lower_path)
            .put_u8(Attr::MovementState, r.state);
        Ok(m)
    }

    fn move_cutover(&self, req: &Request<'_>) -> Reply {
        let oid = Oid(req.attrs.require_id16(Attr::ObjectId)?);
        let seq = req.attrs.require_u64(Attr::TransactionSeq)?;
        let ws = req.attrs.get_u64(Attr::WriteSeq)?;
        let r = self.ns.move_cutover(&oid, seq, ws).map_err(fs_err)?;
        if r.break_lease {
            self.break_lease(&r.rel_path);
        }
        let mut m = req.reply();
        m.put_u32(Attr::Generation, r.generation)
            .put_u8(Attr::CurrentTier, r.current_tier)
            .put_path(Attr::LowerPath, &r.lower_path);
        Ok(m)
    }

    /// S8.5 item 2: open the file through the mount for writing with
    /// O_NONBLOCK, which breaks every kernel lease, and close it.
    fn break_lease(&self, rel: &OsStr) {
        let Some(mnt) = self.info.mountpoint.clone() else {
            return;
        };
        let path = mnt.join(rel);
        let ns = Arc::clone(&self.ns);
        let spawned = std::thread::Builder::new()
            .name("smoothfs-lease-break".into())
            .spawn(move || {
                use std::os::unix::fs::OpenOptionsExt;
                match std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&path)
                {
                    Ok(_) => {}
                    // EWOULDBLOCK is the lease holder being notified.
                    Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
                    Err(e) => warn!("lease break on {}: {e}", path.display()),
                }
                ns.moves.lease_breaks_total.fetch_add(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            warn!("lease break thread: {e}");
        }
    }

    fn move_abort(&self, req: &Request<'_>) -> Reply {
        let oid = Oid(req.attrs.require_id16(Attr::ObjectId)?);
        let seq = req.attrs.require_u64(Attr::TransactionSeq)?;
        let reason = req.attrs.get_str(Attr::FailureReason)?.unwrap_or("");
        let st = self.ns.move_abort(&oid, seq, reason).map_err(fs_err)?;
        let mut m = req.reply();
        m.put_u8(Attr::MovementState, st);
        Ok(m)
    }

    fn move_cleanup(&self, req: &Request<'_>) -> Reply {
        let oid = Oid(req.attrs.require_id16(Attr::ObjectId)?);
        let seq = req.attrs.require_u64(Attr::TransactionSeq)?;
        let (st, errno) = self.ns.move_cleanup(&oid, seq).map_err(fs_err)?;
        let mut m = req.reply();
        m.put_u8(Attr::MovementState, st)
            .put_u32(Attr::CleanupErrno, u32::try_from(errno).unwrap_or(0));
        Ok(m)
    }

    fn revoke_mappings(&self, req: &Request<'_>) -> Reply {
        let oid = Oid(req.attrs.require_id16(Attr::ObjectId)?);
        let n = self.ns.revoke_mappings(&oid).map_err(fs_err)?;
        let mut m = req.reply();
        m.put_u32(Attr::PassthroughHandles, n);
        Ok(m)
    }

    fn reconcile(&self, req: &Request<'_>) -> Reply {
        let reason = req.attrs.get_str(Attr::ReconcileReason)?.unwrap_or("");
        self.ns.reconcile();
        {
            let mut r = self.reconciled.lock();
            r.0 = reason.to_string();
            r.1 = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
        }
        drain_heat(&self.ns, &self.hub);
        info!("reconcile: {reason}");
        Ok(req.reply())
    }

    fn pin_set(&self, req: &Request<'_>) -> Reply {
        let oid = Oid(req.attrs.require_id16(Attr::ObjectId)?);
        let policy = req.attrs.get_u8(Attr::PolicyPin)?;
        let protocol = req.attrs.get_u8(Attr::PinState)?;
        let mediated = req.attrs.get_bool(Attr::Mediated)?;
        if policy.is_none() && protocol.is_none() && mediated.is_none() {
            return Err(WireError::invalid(
                "PIN_SET needs POLICY_PIN, PIN_STATE or MEDIATED",
            ));
        }
        let p = self
            .ns
            .pin_set(&oid, policy, protocol, mediated)
            .map_err(fs_err)?;
        let mut m = req.reply();
        m.put_u8(Attr::PinState, p.effective)
            .put_u8(Attr::PolicyPin, p.policy)
            .put_bool(Attr::Mediated, p.mediated);
        Ok(m)
    }

    // ---- TIER_DOWN / TIER_RESUME (S23) ---------------------------------------

    fn tier_rank(&self, req: &Request<'_>) -> std::result::Result<u8, WireError> {
        let rank = req.attrs.require_u8(Attr::TierRank)?;
        if usize::from(rank) >= self.ns.tiers.len() {
            return Err(WireError::invalid(format!(
                "TIER_RANK {rank}: the pool has {} tier(s)",
                self.ns.tiers.len()
            )));
        }
        Ok(rank)
    }

    fn tier_down(&self, req: &Request<'_>) -> Reply {
        let rank = self.tier_rank(req)?;
        warn!("tier {rank} set down by TIER_DOWN");
        self.ns
            .set_tier_state(rank, crate::health::STATE_DOWN, libc::ESHUTDOWN);
        let mut m = req.reply();
        m.put_u8(Attr::TierState, TierState::Down.number());
        Ok(m)
    }

    fn tier_resume(&self, req: &Request<'_>) -> Reply {
        let rank = self.tier_rank(req)?;
        let st = self.health.resume(&self.ns, rank).map_err(fs_err)?;
        if !self.info.read_only {
            self.scrubber.start();
        }
        let mut m = req.reply();
        m.put_u8(Attr::TierState, tier_state(st).number());
        Ok(m)
    }

    // ---- SCRUB (S4.6), PRUNE_DIRS (S15.3) --------------------------------

    fn scrub(&self, req: &Request<'_>) -> Reply {
        match req.attrs.get_str(Attr::Name)?.unwrap_or("status") {
            "start" => {
                if self.info.read_only {
                    return Err(WireError::new(libc::EROFS, "pool mounted read-only"));
                }
                self.scrubber.start();
                info!("scrub started on request");
            }
            "stop" => {
                self.scrubber.stop();
                info!("scrub stopped on request");
            }
            "status" => {}
            other => {
                return Err(WireError::invalid(format!(
                    "SCRUB NAME must be start, stop or status, not '{other}'"
                )));
            }
        }
        status_items_reply(req, self.scrubber.status_items(&self.ns))
    }

    fn prune_dirs(&self, req: &Request<'_>) -> Reply {
        let mask = req.attrs.get_u64(Attr::TierMask)?;
        let under = req.attrs.get_path(Attr::RelPath)?;
        let report = self
            .ns
            .prune_dirs(mask, under.map(|p| p.as_os_str()))
            .map_err(fs_err)?;
        info!(
            removed = report.dirs_removed,
            updated = report.dirs_updated,
            kept = report.dirs_kept,
            "directories pruned"
        );
        status_items_reply(req, report.status_items())
    }

    // ---- LIST_OBJECTS (S7.4) ----------------------------------------------

    /// Pages through the identity index in OID order. SINCE_SEQ is accepted
    /// and every object is listed (a superset of "changed since"; the index
    /// keeps no per-object seq). A page also ends early when the OBJECTS
    /// list would outgrow one attribute (16-bit length).
    fn list_objects(&self, req: &Request<'_>) -> Reply {
        const PAGE_BYTES: usize = 60_000;
        let cursor =
            match req.attrs.get_bytes(Attr::Cursor) {
                None => None,
                Some(b) => Some(<[u8; 16]>::try_from(b).map_err(|_| {
                    WireError::invalid("CURSOR is not one returned by LIST_OBJECTS")
                })?),
            };
        let limit = req.attrs.get_u32(Attr::Limit)?.unwrap_or(1000);
        if !(1..=10_000).contains(&limit) {
            return Err(WireError::invalid(format!(
                "LIMIT {limit} is not in 1..=10000"
            )));
        }
        let _since = req.attrs.get_u64(Attr::SinceSeq)?;
        let tier = req.attrs.get_u8(Attr::TierRank)?;
        let kind = req.attrs.get_u8(Attr::ObjectKind)?.unwrap_or(1);
        let journal_seq = self.ns.placement.journal_seq();
        let mut out: Vec<ObjectEntry> = Vec::new();
        let mut bytes = 0usize;
        let mut after = cursor;
        let mut more = true;
        'pages: while out.len() < limit as usize {
            let page = self
                .ns
                .placement
                .list_objects(after, 1024)
                .map_err(fs_err)?;
            if page.is_empty() {
                more = false;
                break;
            }
            for rec in page {
                after = Some(rec.oid.0);
                if rec.oid.is_root() || (kind != 0 && rec.kind != kind) {
                    continue;
                }
                let rank = self.ns.tier_by_slot(rec.slot).map(|t| t.rank);
                if tier.is_some() && rank != tier {
                    continue;
                }
                let e = ObjectEntry {
                    oid: rec.oid.0,
                    kind: ObjectKind::from_number(rec.kind).unwrap_or(ObjectKind::Regular),
                    current_tier: rank.unwrap_or(0),
                    movement_state: MovementState::from_wire(rec.movement_state),
                    pin_state: PinState::from_wire(if rec.protocol_pin != 0 {
                        rec.protocol_pin
                    } else if rec.kind == 1 && rec.nlink_names.len() > 1 {
                        3
                    } else {
                        rec.policy_pin
                    }),
                    policy_pin: PolicyPin::from_wire(rec.policy_pin),
                    mediated: rec.always_mediated,
                    size_bytes: rec.attrs.size,
                    mtime_ns: u64::try_from(rec.attrs.mtime_ns).unwrap_or(0),
                    nlink: u32::try_from(rec.nlink_names.len().max(1)).unwrap_or(u32::MAX),
                    object_gen: rec.r#gen,
                    rel_path: PathBuf::from(&rec.rel_path),
                };
                // The entry's encoded size, as it will sit in OBJECTS.
                let mut probe = smoothfs_uapi::codec::AttrBuf::new();
                e.encode(&mut probe);
                bytes += probe.len() + 8;
                out.push(e);
                if out.len() >= limit as usize || bytes >= PAGE_BYTES {
                    break 'pages;
                }
            }
        }
        if more && out.len() < limit as usize && bytes < PAGE_BYTES {
            more = false;
        }
        let mut m = req.reply();
        m.put_list(Attr::Objects, &out, |w, e| e.encode(w))
            .put_u64(Attr::JournalSeq, journal_seq);
        if more && let Some(c) = after {
            m.put_bytes(Attr::Cursor, &c);
        }
        Ok(m)
    }

    // ---- RESOLVE_PATH -----------------------------------------------------

    fn resolve_path(&self, req: &Request<'_>) -> Reply {
        let path = req.attrs.require_path(Attr::RelPath)?;
        let bytes = path.as_os_str().as_bytes();
        check_rel_path(bytes)?;
        // Walk from the root through the namespace lookup, so unindexed
        // objects resolve too; every lookup taken is given back afterwards.
        let mut taken: Vec<u64> = Vec::new();
        let mut ino = ROOT_INO;
        let mut result: std::result::Result<Node, WireError> = Ok(Node {
            oid: Oid::ROOT,
            generation: 0,
            kind: KIND_DIR,
            rel_path: Default::default(),
            rank: None,
            lookups: 0,
            attr: None,
        });
        for comp in bytes.split(|b| *b == b'/') {
            match self.ns.lookup(ino, OsStr::from_bytes(comp)) {
                Ok(e) => {
                    ino = e.ino;
                    taken.push(e.ino);
                }
                Err(e) => {
                    result = Err(fs_err(e));
                    break;
                }
            }
        }
        if result.is_ok() {
            result = self.ns.node(ino).map_err(fs_err);
        }
        for i in taken.iter().rev() {
            self.ns.forget(*i, 1);
        }
        let node = result?;
        let mut m = req.reply();
        m.put_bytes(Attr::ObjectId, &node.oid.0)
            .put_u64(Attr::Inode, ino)
            .put_u8(Attr::ObjectKind, node.kind)
            .put_u8(Attr::CurrentTier, node.rank.unwrap_or(0));
        Ok(m)
    }

    // ---- REPROBE ----------------------------------------------------------

    fn reprobe(&self, req: &Request<'_>) -> Reply {
        let mut fresh = Vec::with_capacity(self.ns.tiers.len());
        for t in &self.ns.tiers {
            match crate::probe::probe_caps(&t.path) {
                Ok(c) => fresh.push(c.mask),
                Err(e) => {
                    return Err(WireError::new(
                        e.errno,
                        format!(
                            "probe of tier {} ({}) failed: {e}",
                            t.rank,
                            t.path.display()
                        ),
                    ));
                }
            }
        }
        *self.caps.lock() = fresh;
        let tiers = self.tiers();
        let mut m = req.reply();
        m.put_list(Attr::Tiers, &tiers, |w, t| t.encode(w));
        Ok(m)
    }
}

struct View {
    generation: u32,
    write_seq: u64,
    passthrough_handles: u32,
    mediated_handles: u32,
    kind: u8,
    object_gen: u32,
    current_tier: u8,
    intended_tier: u8,
    movement_state: u8,
    pin_state: PinState,
    policy_pin: u8,
    mediated: bool,
    transaction_seq: u64,
    rel_path: Vec<u8>,
    size: u64,
    mtime_ns: u64,
    uid: u32,
    nlink: u32,
}

/// Read-only counters of subsystems not built yet; zero is their true value.
const NOT_BUILT_ZERO: &[&str] = &[
    "write_staging_supported",
    "staged_bytes",
    "staged_rehomes_total",
    "staged_rehomes_pending",
];

/// RW tunables of S26.1 whose subsystems are not built yet.
const RW_NOT_BUILT: &[&str] = &[
    "mediated_comm",
    "heat_interval_ms",
    "write_staging_enabled",
    "write_staging_drain_active_tier_mask",
];

/// A reply carrying `items` (name, value) as its STATUS_ITEMS list.
fn status_items_reply(req: &Request<'_>, items: Vec<(String, String)>) -> Reply {
    let items: Vec<StatusItem> = items
        .into_iter()
        .map(|(name, value)| StatusItem { name, value })
        .collect();
    let mut m = req.reply();
    m.put_list(Attr::StatusItems, &items, |w, i| i.encode(w));
    Ok(m)
}

/// SET_TUNABLE's `value` for `name` as a mask (see [`parse_mask`]), or
/// EINVAL naming both.
fn mask_arg(name: &str, value: &str) -> std::result::Result<u64, WireError> {
    parse_mask(value).ok_or_else(|| {
        WireError::invalid(format!(
            "{name}: '{value}' is not a hex (0x...) or decimal mask"
        ))
    })
}

/// SET_TUNABLE's `value` for `name` as a decimal in `range`, or EINVAL
/// reading "`name`: '`value`' `what`".
fn decimal_arg(
    name: &str,
    value: &str,
    range: std::ops::RangeInclusive<u64>,
    what: &str,
) -> std::result::Result<u64, WireError> {
    parse_decimal(value)
        .filter(|v| range.contains(v))
        .ok_or_else(|| WireError::invalid(format!("{name}: '{value}' {what}")))
}

fn tier_state(raw: u32) -> TierState {
    TierState::from_wire(u8::try_from(raw).unwrap_or(u8::MAX))
}

fn is_error(reply: &[u8]) -> bool {
    Header::peek(reply).is_ok_and(|h| h.flags.contains(smoothfs_uapi::ids::Flags::ERROR))
}

/// `0x…` hex or decimal (S2.2/1).
fn parse_mask(v: &str) -> Option<u64> {
    if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    parse_decimal(v)
}

fn parse_decimal(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// S1.8/2: relative, non-empty, no NUL, no `.`/`..` or empty component.
pub fn check_rel_path(b: &[u8]) -> std::result::Result<(), WireError> {
    if b.is_empty() {
        return Err(WireError::invalid("REL_PATH is empty"));
    }
    if b[0] == b'/' {
        return Err(WireError::invalid("REL_PATH must be relative"));
    }
    if b.contains(&0) {
        return Err(WireError::invalid("REL_PATH contains a NUL byte"));
    }
    for comp in b.split(|c| *c == b'/') {
        if comp.is_empty() || comp == b"." || comp == b".." {
            return Err(WireError::invalid(format!(
                "REL_PATH {:?} has an empty, '.' or '..' component",
                String::from_utf8_lossy(b)
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The socket server
// ---------------------------------------------------------------------------

/// The listening control socket and its threads.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Server {
    /// Bind `path` (S20.1/1): parent created (0755 when it is the default
    /// `/run/smoothfs`), a stale socket file removed, the socket made 0666.
    pub fn listen(ctl: Arc<Control>, path: &Path) -> Result<Server> {
        let ctx = |what: &str| format!("control socket {}: {what}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(ctx("create directory"), e))?;
            if dir == Path::new(crate::options::DEFAULT_RUN_DIR) {
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                std::fs::remove_file(path).map_err(|e| Error::io(ctx("remove stale"), e))?;
            }
            Ok(_) => {
                return Err(crate::err!(
                    libc::EEXIST,
                    "{}",
                    ctx("exists and is not a socket")
                ));
            }
            Err(_) => {}
        }
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| Error::io(ctx("socket"), e.into()))?;
        let addr = SocketAddrUnix::new(path).map_err(|e| Error::io(ctx("address"), e.into()))?;
        rustix::net::bind(&fd, &addr).map_err(|e| Error::io(ctx("bind"), e.into()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| Error::io(ctx("chmod 0666"), e))?;
        rustix::net::listen(&fd, MAX_CONTROL_CLIENTS as i32)
            .map_err(|e| Error::io(ctx("listen"), e.into()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let stop = Arc::clone(&stop);
            let conns = Arc::clone(&conns);
            std::thread::Builder::new()
                .name("control-accept".into())
                .spawn(move || accept_loop(fd, ctl, stop, conns))
                .map_err(|e| Error::io(ctx("spawn accept thread"), e))?
        };
        info!("control socket listening on {}", path.display());
        Ok(Server {
            path: path.to_path_buf(),
            stop,
            accept: Some(accept),
            conns,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stop accepting, end every connection (within one [`TICK`]), wait for
    /// the threads and remove the socket file.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let handles: Vec<_> = std::mem::take(&mut *self.conns.lock());
        for h in handles {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.stop_all();
        }
    }
}

/// Wait until `fd` is readable (or writable with `out`), at most one tick.
fn wait_fd(fd: BorrowedFd<'_>, out: bool) -> std::io::Result<bool> {
    let flags = if out { PollFlags::OUT } else { PollFlags::IN };
    let mut fds = [PollFd::new(&fd, flags)];
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: i64::from(TICK.subsec_nanos()) as _,
    };
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn accept_loop(
    listener: OwnedFd,
    ctl: Arc<Control>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        match wait_fd(listener.as_fd(), false) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                warn!("control socket poll failed: {e}");
                std::thread::sleep(TICK);
                continue;
            }
        }
        let fd = match rustix::net::accept_with(&listener, SocketFlags::CLOEXEC) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                warn!("control socket accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        // S20.1/3: accept and close at once beyond the limit.
        if active.load(Ordering::SeqCst) >= MAX_CONTROL_CLIENTS {
            debug!("control connection refused: {MAX_CONTROL_CLIENTS} already open");
            drop(fd);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let guard = ActiveGuard(Arc::clone(&active));
        let ctl = Arc::clone(&ctl);
        let stop2 = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("control-conn".into())
            .spawn(move || {
                let _guard = guard;
                serve_connection(fd, &ctl, &stop2);
            });
        let mut list = conns.lock();
        list.retain(|h| !h.is_finished());
        match spawned {
            Ok(h) => list.push(h),
            Err(e) => warn!("cannot start a control connection thread: {e}"),
        }
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Send one datagram, waiting in ticks while the socket is full.
fn send_msg(fd: BorrowedFd<'_>, msg: &[u8], stop: &AtomicBool) -> std::io::Result<()> {
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(libc::ECANCELED));
        }
        match rustix::net::send(fd, msg, SendFlags::NOSIGNAL | SendFlags::DONTWAIT) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {
                wait_fd(fd, true)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

enum Recv {
    /// A datagram of this (untruncated) length is in the buffer.
    Msg(usize),
    Nothing,
    Closed,
}

fn recv_msg(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Recv {
    match rustix::net::recv(fd, buf, RecvFlags::DONTWAIT | RecvFlags::TRUNC) {
        Ok((_, 0)) => Recv::Closed,
        Ok((_, n)) => Recv::Msg(n),
        Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => Recv::Nothing,
        Err(_) => Recv::Closed,
    }
}

fn peer_uid(fd: BorrowedFd<'_>) -> u32 {
    // Unknown credentials are treated as unprivileged.
    rustix::net::sockopt::socket_peercred(fd).map_or(u32::MAX, |c| c.uid.as_raw())
}

fn serve_connection(fd: OwnedFd, ctl: &Control, stop: &AtomicBool) {
    // One byte more than the limit, so an oversized datagram is recognised.
    let mut buf = vec![0u8; MAX_MESSAGE_LEN + 1];
    while !stop.load(Ordering::SeqCst) {
        match wait_fd(fd.as_fd(), false) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        let n = match recv_msg(fd.as_fd(), &mut buf) {
            Recv::Msg(n) => n,
            Recv::Nothing => continue,
            Recv::Closed => return,
        };
        let got = &buf[..n.min(buf.len())];
        let outcome = ctl.handle_received(got, n, peer_uid(fd.as_fd()));
        // A subscriber is registered before SUBSCRIBE is answered, so an
        // event published right after the reply reaches it (S20.5).
        let sub = match &outcome {
            Outcome::Subscribe { mask, .. } => Some(ctl.hub().register(*mask)),
            Outcome::Reply(_) => None,
        };
        if send_msg(fd.as_fd(), outcome.bytes(), stop).is_err() {
            if let Some(sub) = sub {
                ctl.hub().unregister(&sub);
            }
            return;
        }
        if let Some(sub) = sub {
            serve_subscription(fd.as_fd(), ctl, stop, sub, &mut buf);
            return;
        }
    }
}

/// The event side of a subscribed connection: MOUNT_READY first, then the
/// queued events; any request received is answered EINVAL.
fn serve_subscription(
    fd: BorrowedFd<'_>,
    ctl: &Control,
    stop: &AtomicBool,
    sub: Arc<Subscriber>,
    buf: &mut [u8],
) {
    let hub = Arc::clone(ctl.hub());
    let mut seq: u32 = 0;
    let mut next_seq = || {
        seq = seq.wrapping_add(1).max(1);
        seq
    };
    // Wait for the pool to be ready, answering stray requests meanwhile.
    let mut ready = false;
    while !stop.load(Ordering::SeqCst) {
        if hub.wait_ready(TICK) {
            ready = true;
            break;
        }
        if !answer_strays(fd, buf, stop) {
            break;
        }
    }
    if ready {
        let send_event = |ev: &Event, seq: u32, loss: bool| match ev.encode(seq, loss) {
            Ok(bytes) => send_msg(fd, &bytes, stop).is_ok(),
            Err(e) => {
                warn!("cannot encode {} event: {e}", ev.name());
                true
            }
        };
        if send_event(&ctl.mount_ready(), next_seq(), false) {
            'serve: while !stop.load(Ordering::SeqCst) {
                let (events, mut loss) = sub.take(TICK);
                for ev in &events {
                    if !send_event(ev, next_seq(), loss) {
                        break 'serve;
                    }
                    loss = false;
                }
                if loss {
                    // Everything queued was dropped; the flag waits for the next event.
                    sub.queue.lock().lost = true;
                }
                if !answer_strays(fd, buf, stop) {
                    break;
                }
            }
        }
    }
    hub.unregister(&sub);
}

/// Answer requests on a subscribed connection with EINVAL; false once the
/// peer has gone.
fn answer_strays(fd: BorrowedFd<'_>, buf: &mut [u8], stop: &AtomicBool) -> bool {
    loop {
        match recv_msg(fd, buf) {
            Recv::Nothing => return true,
            Recv::Closed => return false,
            Recv::Msg(n) => {
                let got = &buf[..n.min(buf.len())];
                let (seq, id) = Header::peek(got).map_or((0, 0), |h| (h.seq, h.id));
                let reply = encode_error_reply(
                    seq,
                    id,
                    libc::EINVAL,
                    "this connection is subscribed and only carries events",
                );
                if send_msg(fd, &reply, stop).is_err() {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::NamespaceConfig;
    use crate::placement::Placement;
    use crate::tier::Tier;
    use smoothfs_uapi::codec::{AttrBuf, Attrs, decode_message, encode_message};
    use smoothfs_uapi::event::decode_list;
    use smoothfs_uapi::ids::Flags;

    const POOL: Uuid = Uuid::from_bytes([7; 16]);

    struct Fixture {
        _dir: tempfile::TempDir,
        tiers: Vec<PathBuf>,
        ctl: Arc<Control>,
    }

    fn fixture(n: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut tiers = Vec::new();
        let mut paths = Vec::new();
        for rank in 0..n {
            let p = dir.path().join(format!("t{rank}"));
            std::fs::create_dir_all(p.join(".smoothfs")).unwrap();
            let root = crate::marker::open_tier_root(&p).unwrap();
            tiers.push(Tier::new(rank as u8, rank as u8, p.clone(), root, 0x173));
            paths.push(p);
        }
        let (placement, _) =
            Placement::open(&paths[0].join(".smoothfs"), *POOL.as_bytes()).unwrap();
        let ns = Namespace::new(
            tiers,
            placement,
            NamespaceConfig {
                full_pct: 98,
                metadata_mask: u32::MAX,
                read_only: false,
            },
        );
        let info = PoolInfo {
            uuid: POOL,
            name: "testpool".into(),
            tier_ids: (0..n).map(|i| format!("tier-{i}")).collect(),
            read_only: false,
            heat_interval_ms: 1000,
            write_staging: false,
            mediated_comm: Vec::new(),
            mountpoint: None,
        };
        let ctl = Control::new(Arc::new(ns), info, EventHub::new(POOL));
        Fixture {
            _dir: dir,
            tiers: paths,
            ctl,
        }
    }

    fn request(cmd: u16, seq: u32, f: impl FnOnce(&mut AttrBuf)) -> Vec<u8> {
        let mut a = AttrBuf::new();
        f(&mut a);
        encode_message(cmd, Flags::REQUEST, seq, &a).unwrap()
    }

    fn with_pool(cmd: Command, seq: u32, f: impl FnOnce(&mut AttrBuf)) -> Vec<u8> {
        request(cmd.number(), seq, |a| {
            a.put_bytes(Attr::PoolUuid, POOL.as_bytes());
            f(a);
        })
    }

    /// (errno or 0, seq, reply bytes)
    fn call(ctl: &Control, msg: &[u8], uid: u32) -> (u32, u32, Vec<u8>) {
        let out = ctl.handle(msg, uid);
        let bytes = out.bytes().to_vec();
        let m = decode_message(&bytes).expect("replies are well-formed");
        assert!(m.header.flags.contains(Flags::REPLY));
        let errno = if m.header.flags.contains(Flags::ERROR) {
            m.attrs.require_u32(Attr::Errno).unwrap()
        } else {
            0
        };
        (errno, m.header.seq, bytes)
    }

    fn attrs(bytes: &[u8]) -> Attrs<'_> {
        decode_message(bytes).unwrap().attrs
    }

    fn status_map(ctl: &Control) -> std::collections::HashMap<String, String> {
        let (e, _, b) = call(ctl, &with_pool(Command::Status, 9, |_| {}), 0);
        assert_eq!(e, 0);
        decode_list(&attrs(&b), Attr::StatusItems, StatusItem::decode)
            .unwrap()
            .into_iter()
            .map(|i| (i.name, i.value))
            .collect()
    }

    fn set(ctl: &Control, name: &str, value: &str) -> std::result::Result<String, u32> {
        let (e, _, b) = call(
            ctl,
            &with_pool(Command::SetTunable, 3, |a| {
                a.put_str(Attr::Name, name).put_str(Attr::Value, value);
            }),
            0,
        );
        if e != 0 {
            return Err(e);
        }
        Ok(attrs(&b).require_str(Attr::Value).unwrap().to_string())
    }

    /// Sets `name` to each `(value, took)` in turn; each must succeed and
    /// answer `took`, the value as it took effect (clamped or normalised).
    fn assert_sets(ctl: &Control, name: &str, steps: &[(&str, &str)]) {
        for &(value, took) in steps {
            assert_eq!(
                set(ctl, name, value),
                Ok(took.to_string()),
                "{name} = {value}"
            );
        }
    }

    #[test]
    fn s20_a4_framing_errors() {
        let f = fixture(2);
        // Unknown command id 200.
        let (e, seq, _) = call(&f.ctl, &request(200, 5, |_| {}), 0);
        assert_eq!((e, seq), (libc::EOPNOTSUPP as u32, 5));
        // Version 2.
        let mut m = with_pool(Command::Status, 6, |_| {});
        m[12] = 2;
        let (e, seq, _) = call(&f.ctl, &m, 0);
        assert_eq!((e, seq), (libc::EPROTONOSUPPORT as u32, 6));
        // A 3-byte TRANSACTION_SEQ.
        let m = with_pool(Command::MovePlan, 7, |a| {
            a.put_raw(Attr::TransactionSeq.number(), &[1, 2, 3]);
        });
        let (e, seq, _) = call(&f.ctl, &m, 0);
        assert_eq!((e, seq), (libc::EINVAL as u32, 7));
        // Another pool's UUID.
        let m = request(Command::Status.number(), 8, |a| {
            a.put_bytes(Attr::PoolUuid, &[9; 16]);
        });
        assert_eq!(call(&f.ctl, &m, 0).0, libc::ENODEV as u32);
        // Missing POOL_UUID.
        let m = request(Command::Status.number(), 8, |_| {});
        assert_eq!(call(&f.ctl, &m, 0).0, libc::EINVAL as u32);
        // Short datagram: EINVAL with seq 0.
        let (e, seq, _) = call(&f.ctl, &[1, 2, 3], 0);
        assert_eq!((e, seq), (libc::EINVAL as u32, 0));
        // An event id sent as a request.
        let m = request(EventId::Spill.number(), 4, |_| {});
        assert_eq!(call(&f.ctl, &m, 0).0, libc::EINVAL as u32);
        // Oversized (as the socket reports it).
        let out = f.ctl.handle_received(&m, MAX_MESSAGE_LEN + 1, 0);
        let hdr = Header::peek(out.bytes()).unwrap();
        assert_eq!(hdr.seq, 4);
        assert_eq!(
            attrs(out.bytes()).require_u32(Attr::Errno).unwrap(),
            libc::EMSGSIZE as u32
        );
    }

    #[test]
    fn permissions_and_unbuilt_commands() {
        let f = fixture(1);
        let m = with_pool(Command::MovePlan, 1, |_| {});
        assert_eq!(call(&f.ctl, &m, 1000).0, libc::EPERM as u32);
        // Missing OBJECT_ID etc.
        assert_eq!(call(&f.ctl, &m, 0).0, libc::EINVAL as u32);
        // TIER_RESUME needs TIER_RANK; a rank beyond the pool is EINVAL.
        let m = with_pool(Command::TierResume, 1, |_| {});
        assert_eq!(call(&f.ctl, &m, 0).0, libc::EINVAL as u32);
        let m = with_pool(Command::TierResume, 1, |a| {
            a.put_u8(Attr::TierRank, 3);
        });
        assert_eq!(call(&f.ctl, &m, 0).0, libc::EINVAL as u32);
        // Reserved commands: ENOSYS.
        let m = with_pool(Command::DirtyRanges, 1, |_| {});
        assert_eq!(call(&f.ctl, &m, 0).0, libc::ENOSYS as u32);
        let m = with_pool(Command::Status, 1, |_| {});
        assert_eq!(call(&f.ctl, &m, 1000).0, libc::EPERM as u32);
        // REGISTER_POOL needs no POOL_UUID and is a no-op.
        let m = request(Command::RegisterPool.number(), 2, |_| {});
        assert_eq!(call(&f.ctl, &m, 0).0, 0);
        let m = request(Command::PolicyPush.number(), 2, |_| {});
        assert_eq!(call(&f.ctl, &m, 0).0, libc::ENOSYS as u32);
        let m = request(Command::TierDown.number(), 2, |_| {});
        assert_eq!(call(&f.ctl, &m, 0).0, 0);
    }

    #[test]
    fn s1_8_a2_resolve_path_rejects_bad_paths() {
        let f = fixture(1);
        for bad in ["../etc/passwd", "/etc/passwd", "", "a/./b", "a//b", "a/"] {
            let m = with_pool(Command::ResolvePath, 1, |a| {
                a.put_str(Attr::RelPath, bad);
            });
            assert_eq!(call(&f.ctl, &m, 0).0, libc::EINVAL as u32, "{bad:?}");
        }
        let m = with_pool(Command::ResolvePath, 1, |a| {
            a.put_str(Attr::RelPath, "nope");
        });
        assert_eq!(call(&f.ctl, &m, 0).0, libc::ENOENT as u32);
    }

    #[test]
    fn resolve_then_inspect_an_unindexed_file() {
        let f = fixture(2);
        std::fs::create_dir_all(f.tiers[1].join("d")).unwrap();
        std::fs::write(f.tiers[1].join("d/x"), b"hello").unwrap();
        let m = with_pool(Command::ResolvePath, 1, |a| {
            a.put_str(Attr::RelPath, "d/x");
        });
        let (e, _, b) = call(&f.ctl, &m, 0);
        assert_eq!(e, 0);
        let a = attrs(&b);
        let oid = a.require_id16(Attr::ObjectId).unwrap();
        assert_eq!(a.require_u8(Attr::CurrentTier).unwrap(), 1);
        assert_eq!(a.require_u8(Attr::ObjectKind).unwrap(), 1);
        assert_eq!(a.require_u64(Attr::Inode).unwrap(), Oid(oid).ino());
        // The walk gave back its lookups.
        assert_eq!(f.ctl.ns.resident_nodes(), 1);
        let m = with_pool(Command::Inspect, 2, |a| {
            a.put_bytes(Attr::ObjectId, &oid);
        });
        let (e, _, b) = call(&f.ctl, &m, 0);
        assert_eq!(e, 0);
        let a = attrs(&b);
        let tier_path = a.require_path(Attr::TierPath).unwrap();
        assert_eq!(tier_path, f.tiers[1]);
        assert_eq!(a.require_path(Attr::RelPath).unwrap(), Path::new("d/x"));
        // S20/A6
        assert_eq!(
            a.require_path(Attr::LowerPath).unwrap(),
            f.tiers[1].join("d/x")
        );
        assert_eq!(a.require_u64(Attr::SizeBytes).unwrap(), 5);
        assert_eq!(a.require_u8(Attr::MovementState).unwrap(), 0);
        assert_eq!(a.require_u8(Attr::IntendedTier).unwrap(), 1);
        // Owned by root: uid 1000 may not inspect it.
        assert_eq!(call(&f.ctl, &m, 1000).0, libc::EPERM as u32);
        // Unknown OID.
        let m = with_pool(Command::Inspect, 2, |a| {
            a.put_bytes(Attr::ObjectId, &[0xab; 16]);
        });
        assert_eq!(call(&f.ctl, &m, 0).0, libc::ENOENT as u32);
    }

    #[test]
    fn s2_2_a1_mask_clamping() {
        let f = fixture(2);
        assert_eq!(status_map(&f.ctl)["metadata_active_tier_mask"], "0x3");
        assert_sets(
            &f.ctl,
            "metadata_active_tier_mask",
            &[("0x2", "0x3"), ("0xff", "0x3"), ("1", "0x1")],
        );
        assert_eq!(status_map(&f.ctl)["metadata_active_tier_mask"], "0x1");
        // In this order: the value read back, or the errno.
        for (name, value, want) in [
            ("metadata_active_tier_mask", "zz", Err(libc::EINVAL)),
            ("write_staging_full_pct", "40", Ok("40")),
            ("write_staging_full_pct", "0", Err(libc::EINVAL)),
            ("write_staging_full_pct", "101", Err(libc::EINVAL)),
            ("no_such_thing", "1", Err(libc::EINVAL)),
            ("spill_creates_total", "1", Err(libc::EPERM)),
            ("scrub_rate", "1", Ok("1")),
            ("heat_interval_ms", "1000", Err(libc::ENOSYS)),
        ] {
            let want = want.map(str::to_string).map_err(|e| e as u32);
            assert_eq!(set(&f.ctl, name, value), want, "{name} = {value}");
        }
    }

    #[test]
    fn s1_7_a1_status_items() {
        let f = fixture(2);
        let s = status_map(&f.ctl);
        assert_eq!(s["pool_uuid"], POOL.hyphenated().to_string());
        assert_eq!(s["pool_name"], "testpool");
        assert_eq!(s["spill_creates_total"], "0");
        assert_eq!(s["degraded"], "0");
        assert_eq!(s["tier_count"], "2");
        assert_eq!(s["write_staging_full_pct"], "98");
        let (_, _, b) = call(&f.ctl, &with_pool(Command::Status, 1, |_| {}), 0);
        let tiers = decode_list(&attrs(&b), Attr::Tiers, TierInfo::decode).unwrap();
        assert_eq!(tiers.len(), 2);
        assert_eq!(tiers[1].tier_id, "tier-1");
        assert_eq!(tiers[1].tier_path, f.tiers[1]);
    }

    #[test]
    fn garbage_never_panics_and_status_still_answers() {
        use rand::{Rng, SeedableRng};
        let f = fixture(2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let valid = with_pool(Command::Inspect, 3, |a| {
            a.put_bytes(Attr::ObjectId, &[1; 16]);
        });
        for i in 0..20_000 {
            let msg: Vec<u8> = if i % 2 == 0 {
                let len = rng.random_range(0..96);
                (0..len).map(|_| rng.random()).collect()
            } else {
                let mut m = valid.clone();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..m.len());
                    m[at] = rng.random();
                }
                m
            };
            let out = f.ctl.handle_received(&msg, msg.len(), 0);
            assert!(Header::peek(out.bytes()).is_ok());
        }
        assert_eq!(status_map(&f.ctl)["pool_name"], "testpool");
    }

    #[test]
    fn real_socket_with_the_uapi_client() {
        use smoothfs_uapi::client::Client;
        let f = fixture(2);
        let sock_dir = tempfile::tempdir().unwrap();
        let path = sock_dir.path().join("pool.sock");
        // A stale socket file is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let server = Server::listen(Arc::clone(&f.ctl), &path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        let mut c = Client::connect(&path).unwrap();
        let mut a = AttrBuf::new();
        a.put_bytes(Attr::PoolUuid, POOL.as_bytes());
        let r = c.request(Command::Status, &a).unwrap();
        let items = decode_list(&r.attrs(), Attr::StatusItems, StatusItem::decode).unwrap();
        assert!(items.iter().any(|i| i.name == "spill_creates_total"));
        // An error reply does not close the connection.
        let mut bad = AttrBuf::new();
        bad.put_bytes(Attr::PoolUuid, &[1; 16]);
        let e = c.request(Command::Status, &bad).unwrap_err();
        assert_eq!(e.errno(), libc::ENODEV);
        assert!(c.request(Command::Status, &a).is_ok());
        // Subscription: MOUNT_READY after ready, then SPILL.
        f.ctl.hub().set_ready();
        let mut stream = c.subscribe(EVENT_MASK_ALL).unwrap();
        let ev = stream.recv_timeout(Duration::from_secs(5)).unwrap();
        let Event::MountReady(mr) = ev.event else {
            panic!("first event is {:?}", ev.event)
        };
        assert_eq!(ev.seq, 1);
        assert_eq!(mr.pool_name, "testpool");
        assert_eq!(mr.fsid, fsid_for(&POOL));
        assert_eq!(mr.tiers.len(), 2);
        f.ctl.hub().spill(&SpillRecord {
            oid: Oid([3; 16]),
            first_rank: 0,
            used_rank: 1,
            size: 16 << 20,
            rel_path: "big".into(),
        });
        let ev = stream.recv_timeout(Duration::from_secs(5)).unwrap();
        let Event::Spill(s) = ev.event else {
            panic!("expected SPILL, got {:?}", ev.event)
        };
        assert_eq!(
            (s.first_tier, s.landed_tier, s.size_bytes),
            (0, 1, 16 << 20)
        );
        assert!(!ev.loss);
        drop(stream);
        server.shutdown();
        assert!(!path.exists());
    }

    #[test]
    fn full_queue_sets_loss() {
        let hub = EventHub::new(POOL);
        let sub = hub.register(EVENT_MASK_ALL);
        let rec = SpillRecord {
            oid: Oid([3; 16]),
            first_rank: 0,
            used_rank: 1,
            size: 0,
            rel_path: "x".into(),
        };
        for _ in 0..EVENT_QUEUE_LEN + 3 {
            hub.spill(&rec);
        }
        assert_eq!(hub.events_dropped(), 3);
        let (events, lost) = sub.take(Duration::ZERO);
        assert_eq!(events.len(), EVENT_QUEUE_LEN);
        assert!(lost);
        // A mask without SPILL receives nothing.
        let other = hub.register(EventId::MoveState.mask_bit());
        hub.spill(&rec);
        assert!(other.take(Duration::ZERO).0.is_empty());
    }

    // ---- movement (S9, S11, S12, S8, S15) without a FUSE mount ------------

    /// Create `rel` (parents included) through the namespace; returns its OID.
    fn mkfile(f: &Fixture, rel: &str, data: &[u8]) -> Oid {
        let ns = &f.ctl.ns;
        let mut parent = ROOT_INO;
        let comps: Vec<&str> = rel.split('/').collect();
        for d in &comps[..comps.len() - 1] {
            parent = match ns.lookup(parent, OsStr::new(d)) {
                Ok(e) => e.ino,
                Err(_) => {
                    ns.mkdir(parent, OsStr::new(d), 0o755 | libc::S_IFDIR, 0, 0, 0)
                        .unwrap()
                        .ino
                }
            };
        }
        let (e, fd) = ns
            .create(
                parent,
                OsStr::new(comps[comps.len() - 1]),
                0o644 | libc::S_IFREG,
                0,
                libc::O_RDWR,
                0,
                0,
            )
            .unwrap();
        sys::pwrite(fd.as_fd(), data, 0).unwrap();
        ns.node(e.ino).unwrap().oid
    }

    fn plan(f: &Fixture, oid: &Oid, dest: u8, seq: u64, force: bool) -> (u32, Vec<u8>) {
        let m = with_pool(Command::MovePlan, 3, |a| {
            a.put_bytes(Attr::ObjectId, &oid.0)
                .put_u8(Attr::IntendedTier, dest)
                .put_u64(Attr::TransactionSeq, seq);
            if force {
                a.put_bool(Attr::Force, true);
            }
        });
        let (e, _, b) = call(&f.ctl, &m, 0);
        (e, b)
    }

    fn cutover(f: &Fixture, oid: &Oid, seq: u64, ws: Option<u64>) -> (u32, Vec<u8>) {
        let m = with_pool(Command::MoveCutover, 4, |a| {
            a.put_bytes(Attr::ObjectId, &oid.0)
                .put_u64(Attr::TransactionSeq, seq);
            if let Some(w) = ws {
                a.put_u64(Attr::WriteSeq, w);
            }
        });
        let (e, _, b) = call(&f.ctl, &m, 0);
        (e, b)
    }

    fn simple(f: &Fixture, cmd: Command, oid: &Oid, seq: u64) -> (u32, Vec<u8>) {
        let m = with_pool(cmd, 5, |a| {
            a.put_bytes(Attr::ObjectId, &oid.0)
                .put_u64(Attr::TransactionSeq, seq);
        });
        let (e, _, b) = call(&f.ctl, &m, 0);
        (e, b)
    }

    fn inspect_of(f: &Fixture, oid: &Oid) -> Vec<u8> {
        let m = with_pool(Command::Inspect, 6, |a| {
            a.put_bytes(Attr::ObjectId, &oid.0);
        });
        let (e, _, b) = call(&f.ctl, &m, 0);
        assert_eq!(e, 0);
        b
    }

    /// An accepted (unforced) MOVE_PLAN of `oid` to `dest` under `seq`;
    /// returns the staging path it hands out.
    fn planned(f: &Fixture, oid: &Oid, dest: u8, seq: u64) -> PathBuf {
        let (e, b) = plan(f, oid, dest, seq, false);
        assert_eq!(e, 0);
        PathBuf::from(attrs(&b).require_path(Attr::StagingPath).unwrap())
    }

    /// The object's WRITE_SEQ as INSPECT reports it.
    fn write_seq(f: &Fixture, oid: &Oid) -> u64 {
        attrs(&inspect_of(f, oid))
            .require_u64(Attr::WriteSeq)
            .unwrap()
    }

    /// What the worker does between MOVE_PLAN and MOVE_CUTOVER: copy the
    /// bytes and every xattr (identity included) into the staging path.
    fn stage_copy(src: &Path, staging: &Path) {
        std::fs::copy(src, staging).unwrap();
        let d = std::fs::File::open(src.parent().unwrap()).unwrap();
        let name = src.file_name().unwrap();
        let list = sys::llistxattr(d.as_fd(), name).unwrap();
        let sd = std::fs::File::open(staging.parent().unwrap()).unwrap();
        for x in list.split(|b| *b == 0).filter(|x| !x.is_empty()) {
            let c = std::ffi::CString::new(x).unwrap();
            let v = sys::lgetxattr(d.as_fd(), name, &c).unwrap();
            sys::lsetxattr(sd.as_fd(), staging.file_name().unwrap(), &c, &v, 0).unwrap();
        }
    }

    #[test]
    fn s12_a1_plan_gates_return_their_errno_and_change_nothing() {
        let f = fixture(2);
        let oid = mkfile(&f, "g.txt", b"gate");
        let unknown = Oid([0x42; 16]);
        assert_eq!(
            plan(&f, &oid, 2, 1, false).0,
            libc::EINVAL as u32,
            "tier out of range"
        );
        assert_eq!(plan(&f, &unknown, 1, 1, false).0, libc::ENOENT as u32);
        assert_eq!(plan(&f, &oid, 0, 1, false).0, libc::EALREADY as u32);
        // pin_hot: never demoted; pin_cold is fine for a demotion.
        f.ctl.ns.pin_set(&oid, Some(1), None, None).unwrap();
        assert_eq!(plan(&f, &oid, 1, 1, false).0, libc::EBUSY as u32, "pin_hot");
        f.ctl.ns.pin_set(&oid, Some(2), None, None).unwrap();
        // pin_lun: EBUSY even with FORCE; pin_lease: only with FORCE.
        f.ctl.ns.pin_set(&oid, None, Some(5), None).unwrap();
        assert_eq!(plan(&f, &oid, 1, 1, true).0, libc::EBUSY as u32, "pin_lun");
        f.ctl.ns.pin_set(&oid, None, Some(0), None).unwrap();
        f.ctl.ns.pin_set(&oid, None, Some(4), None).unwrap();
        assert_eq!(
            plan(&f, &oid, 1, 1, false).0,
            libc::EBUSY as u32,
            "pin_lease"
        );
        // Quiesced: EAGAIN, and nothing changed.
        f.ctl.ns.quiesce().unwrap();
        assert_eq!(plan(&f, &oid, 1, 1, true).0, libc::EAGAIN as u32);
        let (e, _, _) = call(
            &f.ctl,
            &with_pool(Command::Reconcile, 7, |a| {
                a.put_str(Attr::ReconcileReason, "maint");
            }),
            0,
        );
        assert_eq!(e, 0);
        assert_eq!(status_map(&f.ctl)["last_reconcile_reason"], "maint");
        let b = inspect_of(&f, &oid);
        assert_eq!(attrs(&b).require_u8(Attr::MovementState).unwrap(), 0);
        let (e, b) = plan(&f, &oid, 1, 1, true);
        assert_eq!(e, 0, "forced plan over a lease is accepted");
        let a = attrs(&b);
        let staging = PathBuf::from(a.require_path(Attr::StagingPath).unwrap());
        assert_eq!(
            staging,
            f.tiers[1].join(format!(".smoothfs/incoming/{}-1", oid.hex()))
        );
        assert!(staging.parent().unwrap().is_dir());
        // A second plan: EBUSY; INSPECT shows the plan.
        assert_eq!(plan(&f, &oid, 1, 2, true).0, libc::EBUSY as u32);
        let b = inspect_of(&f, &oid);
        let a = attrs(&b);
        assert_eq!(a.require_u8(Attr::MovementState).unwrap(), 1);
        assert_eq!(a.require_u8(Attr::IntendedTier).unwrap(), 1);
        assert_eq!(a.require_u64(Attr::TransactionSeq).unwrap(), 1);
        // MOVE_ABORT: wrong seq ESTALE, then back to placed; again EINVAL.
        assert_eq!(
            simple(&f, Command::MoveAbort, &oid, 9).0,
            libc::ESTALE as u32
        );
        std::fs::write(&staging, b"partial").unwrap();
        let (e, b) = simple(&f, Command::MoveAbort, &oid, 1);
        assert_eq!(e, 0);
        assert_eq!(attrs(&b).require_u8(Attr::MovementState).unwrap(), 0);
        assert!(!staging.exists(), "abort removes the staging file");
        assert_eq!(
            simple(&f, Command::MoveAbort, &oid, 1).0,
            libc::EINVAL as u32
        );
        // Hard links pin the object.
        let ns = &f.ctl.ns;
        ns.link(oid.ino(), ROOT_INO, OsStr::new("g2.txt")).unwrap();
        assert_eq!(
            plan(&f, &oid, 1, 3, true).0,
            libc::EBUSY as u32,
            "pin_hardlink"
        );
    }

    #[test]
    fn s11_nested_cutover_cleanup_and_move_back() {
        let f = fixture(2);
        let oid = mkfile(&f, "deep/tree/object.txt", b"nested bytes");
        let ino_before = oid.ino();
        let staging = planned(&f, &oid, 1, 10);
        // No staging yet: ENOENT, back to placed on the source.
        let (e, _) = cutover(&f, &oid, 10, None);
        assert_eq!(e, libc::ENOENT as u32);
        assert_eq!(
            attrs(&inspect_of(&f, &oid))
                .require_u8(Attr::MovementState)
                .unwrap(),
            0
        );
        let staging2 = planned(&f, &oid, 1, 11);
        assert_ne!(staging, staging2);
        let src = f.tiers[0].join("deep/tree/object.txt");
        stage_copy(&src, &staging2);
        assert_eq!(
            cutover(&f, &oid, 99, None).0,
            libc::ESTALE as u32,
            "wrong seq"
        );
        let ws = write_seq(&f, &oid);
        let (e, b) = cutover(&f, &oid, 11, Some(ws));
        assert_eq!(e, 0, "{:?}", attrs(&b).get_str(Attr::ErrorMsg));
        let a = attrs(&b);
        assert_eq!(a.require_u8(Attr::CurrentTier).unwrap(), 1);
        assert_eq!(a.require_u32(Attr::Generation).unwrap(), 1);
        let dest = f.tiers[1].join("deep/tree/object.txt");
        assert_eq!(
            PathBuf::from(a.require_path(Attr::LowerPath).unwrap()),
            dest
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"nested bytes");
        assert!(!staging2.exists());
        let b = inspect_of(&f, &oid);
        let a = attrs(&b);
        assert_eq!(a.require_u8(Attr::MovementState).unwrap(), 7);
        assert_eq!(
            a.require_str(Attr::RelPath).unwrap(),
            "deep/tree/object.txt"
        );
        assert_eq!(a.require_u64(Attr::Inode).unwrap(), ino_before);
        // Reads through the namespace hit the destination.
        let (fd, rank) = f.ctl.ns.open_lower(oid.ino(), libc::O_RDONLY).unwrap();
        assert_eq!(rank, 1);
        drop(fd);
        // Cleanup: wrong seq ESTALE, then the source copy goes.
        assert_eq!(
            simple(&f, Command::MoveCleanup, &oid, 3).0,
            libc::ESTALE as u32
        );
        let (e, b) = simple(&f, Command::MoveCleanup, &oid, 11);
        assert_eq!(e, 0);
        assert_eq!(attrs(&b).require_u32(Attr::CleanupErrno).unwrap(), 0);
        assert!(!src.exists(), "cleanup removes the source copy");
        assert_eq!(
            attrs(&inspect_of(&f, &oid))
                .require_u8(Attr::MovementState)
                .unwrap(),
            0
        );
        // Idempotent for the same seq.
        assert_eq!(simple(&f, Command::MoveCleanup, &oid, 11).0, 0);
        // S9.4 A2: and back again within the same mount.
        let st = planned(&f, &oid, 0, 12);
        stage_copy(&dest, &st);
        assert_eq!(cutover(&f, &oid, 12, None).0, 0);
        assert_eq!(simple(&f, Command::MoveCleanup, &oid, 12).0, 0);
        assert_eq!(std::fs::read(&src).unwrap(), b"nested bytes");
        assert!(!dest.exists());
        let s = status_map(&f.ctl);
        assert_eq!(s["cutovers_total"], "2");
        assert_eq!(s["cleanups_total"], "2");
    }

    #[test]
    fn s11_a4_write_seq_guard_fails_the_move_and_removes_staging() {
        let f = fixture(2);
        let oid = mkfile(&f, "w.txt", b"v1");
        let ws = write_seq(&f, &oid);
        let staging = planned(&f, &oid, 1, 20);
        stage_copy(&f.tiers[0].join("w.txt"), &staging);
        // A data-changing operation lands between copy and cutover.
        f.ctl.ns.live.get(oid.ino()).unwrap().wrote();
        assert_eq!(cutover(&f, &oid, 20, Some(ws)).0, libc::ESTALE as u32);
        let b = inspect_of(&f, &oid);
        assert_eq!(attrs(&b).require_u8(Attr::MovementState).unwrap(), 0);
        assert_eq!(attrs(&b).require_u8(Attr::CurrentTier).unwrap(), 0);
        assert!(!staging.exists());
        assert!(!f.tiers[1].join("w.txt").exists());
        // The next attempt with the new write_seq succeeds.
        let ws = write_seq(&f, &oid);
        let staging = planned(&f, &oid, 1, 21);
        stage_copy(&f.tiers[0].join("w.txt"), &staging);
        assert_eq!(cutover(&f, &oid, 21, Some(ws)).0, 0);
    }

    #[test]
    fn s11_gate_12_foreign_oid_and_quarantine() {
        let f = fixture(2);
        let oid = mkfile(&f, "q.txt", b"mine");
        let staging = planned(&f, &oid, 1, 30);
        stage_copy(&f.tiers[0].join("q.txt"), &staging);
        // A stranger's file sits at the destination path: quarantined.
        std::fs::write(f.tiers[1].join("q.txt"), b"stranger").unwrap();
        assert_eq!(cutover(&f, &oid, 30, None).0, 0);
        assert_eq!(std::fs::read(f.tiers[1].join("q.txt")).unwrap(), b"mine");
        let q: Vec<_> = std::fs::read_dir(f.tiers[1].join(".smoothfs/quarantine"))
            .unwrap()
            .collect();
        assert_eq!(q.len(), 1);
        assert_eq!(simple(&f, Command::MoveCleanup, &oid, 30).0, 0);
        // A staging file carrying another OID: EINVAL, back to placed.
        let staging = planned(&f, &oid, 0, 31);
        stage_copy(&f.tiers[1].join("q.txt"), &staging);
        let sd = std::fs::File::open(staging.parent().unwrap()).unwrap();
        sys::lsetxattr(
            sd.as_fd(),
            staging.file_name().unwrap(),
            c"trusted.smoothfs.oid",
            &[9; 16],
            0,
        )
        .unwrap();
        assert_eq!(cutover(&f, &oid, 31, None).0, libc::EINVAL as u32);
        assert!(!staging.exists());
        assert_eq!(
            attrs(&inspect_of(&f, &oid))
                .require_u8(Attr::CurrentTier)
                .unwrap(),
            1
        );
    }

    #[test]
    fn s8_4_a1_lun_lease_exclusivity() {
        let f = fixture(1);
        let oid = mkfile(&f, "p.bin", b"x");
        let ns = &f.ctl.ns;
        let ino = oid.ino();
        let get = |w: &str| {
            ns.getxattr(ino, OsStr::new(&format!("trusted.smoothfs.{w}")))
                .unwrap()
        };
        let set = |w: &str, v: &[u8]| {
            ns.setxattr(ino, OsStr::new(&format!("trusted.smoothfs.{w}")), v, 0, 0)
        };
        let rm = |w: &str| ns.removexattr(ino, OsStr::new(&format!("trusted.smoothfs.{w}")), 0);
        assert_eq!(get("lun"), vec![0]);
        set("lun", &[1]).unwrap();
        assert_eq!(get("lun"), vec![1]);
        assert_eq!(set("lease", &[1]).unwrap_err().errno, libc::EBUSY);
        assert_eq!(get("lease"), vec![0]);
        rm("lun").unwrap();
        assert_eq!(get("lun"), vec![0]);
        set("lease", &[1]).unwrap();
        assert_eq!(set("lun", &[1]).unwrap_err().errno, libc::EBUSY);
        rm("lease").unwrap();
        assert_eq!(get("lease"), vec![0]);
        set("lun", &[1]).unwrap();
        set("lun", &[0]).unwrap();
        assert_eq!(get("lun"), vec![0]);
        // A2: value checks.
        set("lease", &[1]).unwrap();
        set("lease", &[1]).unwrap();
        assert_eq!(set("lease", &[1, 0]).unwrap_err().errno, libc::EINVAL);
        assert_eq!(set("lease", &[2]).unwrap_err().errno, libc::EINVAL);
        set("lease", &[0]).unwrap();
        assert_eq!(get("lease"), vec![0]);
        // Non-root: EPERM.
        assert_eq!(
            ns.setxattr(ino, OsStr::new("trusted.smoothfs.lun"), &[1], 0, 1000)
                .unwrap_err()
                .errno,
            libc::EPERM
        );
    }

    #[test]
    fn s15_quiesce_waits_for_nothing_when_idle_and_revoke_counts() {
        let f = fixture(2);
        let oid = mkfile(&f, "r.bin", b"x");
        let m = with_pool(Command::RevokeMappings, 8, |a| {
            a.put_bytes(Attr::ObjectId, &oid.0);
        });
        let (e, _, b) = call(&f.ctl, &m, 0);
        assert_eq!(e, 0);
        assert_eq!(attrs(&b).require_u32(Attr::PassthroughHandles).unwrap(), 0);
        assert!(
            f.ctl
                .ns
                .must_mediate(&f.ctl.ns.live.get(oid.ino()).unwrap())
        );
        let (e, _, _) = call(&f.ctl, &with_pool(Command::Quiesce, 9, |_| {}), 0);
        assert_eq!(e, 0);
        assert_eq!(status_map(&f.ctl)["quiesced"], "1");
        assert_eq!(cutover(&f, &oid, 1, None).0, libc::EAGAIN as u32);
        call(&f.ctl, &with_pool(Command::Reconcile, 10, |_| {}), 0);
        assert!(
            !f.ctl
                .ns
                .must_mediate(&f.ctl.ns.live.get(oid.ino()).unwrap())
        );
    }

    #[test]
    fn scrub_and_prune_commands() {
        let f = fixture(2);
        let run = |name: &str| {
            let (e, _, b) = call(
                &f.ctl,
                &with_pool(Command::Scrub, 12, |a| {
                    a.put_str(Attr::Name, name);
                }),
                0,
            );
            (e, b)
        };
        let (e, b) = run("status");
        assert_eq!(e, 0);
        let items = decode_list(&attrs(&b), Attr::StatusItems, StatusItem::decode).unwrap();
        assert!(items.iter().any(|i| i.name == "scrub_state"));
        assert_eq!(run("start").0, 0);
        assert_eq!(run("stop").0, 0);
        assert_eq!(run("bogus").0, libc::EINVAL as u32);
        // PRUNE_DIRS: an empty slower copy of a directory is removed.
        std::fs::create_dir_all(f.tiers[0].join("a/b")).unwrap();
        std::fs::create_dir_all(f.tiers[1].join("a/b")).unwrap();
        let (e, _, b) = call(&f.ctl, &with_pool(Command::PruneDirs, 13, |_| {}), 0);
        assert_eq!(e, 0);
        let items = decode_list(&attrs(&b), Attr::StatusItems, StatusItem::decode).unwrap();
        let removed = items.iter().find(|i| i.name == "dirs_removed").unwrap();
        assert_eq!(removed.value, "2");
        assert!(!f.tiers[1].join("a").exists());
    }

    /// Every LIST_OBJECTS page of at most `limit` objects, following the
    /// cursor from the start to the end.
    fn list_pages(f: &Fixture, seq: u32, limit: u32) -> Vec<Vec<ObjectEntry>> {
        let (mut pages, mut cursor) = (Vec::new(), None::<Vec<u8>>);
        loop {
            let m = with_pool(Command::ListObjects, seq, |a| {
                a.put_u32(Attr::Limit, limit);
                if let Some(c) = &cursor {
                    a.put_bytes(Attr::Cursor, c);
                }
            });
            let (e, _, b) = call(&f.ctl, &m, 0);
            assert_eq!(e, 0, "{:?}", attrs(&b).get_str(Attr::ErrorMsg));
            let a = attrs(&b);
            pages.push(decode_list(&a, Attr::Objects, ObjectEntry::decode).unwrap());
            match a.get_bytes(Attr::Cursor) {
                Some(c) => cursor = Some(c.to_vec()),
                None => return pages,
            }
        }
    }

    #[test]
    fn list_objects_big_pages_fit_one_message() {
        let f = fixture(1);
        for i in 0..1500 {
            mkfile(&f, &format!("f{i}"), b"");
        }
        let seen: usize = list_pages(&f, 14, 10_000).iter().map(Vec::len).sum();
        assert_eq!(seen, 1500);
    }

    #[test]
    fn create_disabled_tier_mask_steers_creates() {
        let f = fixture(2);
        assert_sets(
            &f.ctl,
            "create_disabled_tier_mask",
            &[("0x1", "0x1"), ("0xff", "0x3"), ("1", "0x1")],
        );
        mkfile(&f, "steered.txt", b"x");
        assert!(f.tiers[1].join("steered.txt").exists());
        assert!(!f.tiers[0].join("steered.txt").exists());
        assert_eq!(status_map(&f.ctl)["create_disabled_tier_mask"], "0x1");
        assert_eq!(
            set(&f.ctl, "create_disabled_tier_mask", "0"),
            Ok("0x0".into())
        );
        mkfile(&f, "back.txt", b"x");
        assert!(f.tiers[0].join("back.txt").exists());
    }

    #[test]
    fn list_objects_pages_with_a_cursor() {
        let f = fixture(2);
        let mut want = std::collections::BTreeSet::new();
        for i in 0..25 {
            want.insert(mkfile(&f, &format!("d/f{i}"), b"x").0);
        }
        let mut got = std::collections::BTreeSet::new();
        let pages = list_pages(&f, 11, 10);
        for o in pages.iter().flatten() {
            assert!(got.insert(o.oid), "listed twice");
            assert!(o.rel_path.starts_with("d/"));
        }
        assert_eq!(got, want);
        assert_eq!(pages.len(), 3);
    }
}
