//! Pool discovery and the per-pool event loop (S22.2, S7.1–S7.4).
//!
//! Owns: finding pool sockets (a directory scanned at start, whenever its
//! mtime changes — checked every second, standing in for inotify — and at
//! least every rescan interval; or a fixed list), one thread per pool that
//! subscribes, reads MOUNT_READY, registers the pool, runs recovery
//! (S19.2), the first inventory (S7.4) and PRUNE_DIRS (S15.3), marks the
//! pool ready for planning, and then applies its events: HEAT_SAMPLE to the
//! EWMA (with rows created through INSPECT for unknown OIDs, S7.3),
//! OBJECT_REMOVED as `stale`, TIER_FAULT / TIER_RESUMED / SPILL as pool and
//! tier flags, MOVE_STATE of moves that are not ours as the row's tier.
//! When the socket closes the pool goes offline. Must never: block a stop
//! for longer than one receive tick (closers unblock receives at once), or
//! hold the store lock across a socket request.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smoothfs_uapi::Error as UapiError;
use smoothfs_uapi::client::{Client, EventStream};
use smoothfs_uapi::event::{Event, MountReady, MoveState};
use smoothfs_uapi::heat::HeatRecord;
use smoothfs_uapi::ids::{EVENT_MASK_ALL, MovementState, ObjectKind, TierState};

use crate::daemon::{PoolRuntime, PoolSource, Shared, lock};
use crate::dataplane;

use crate::inventory;
use crate::recovery;
use crate::store::{NewObject, PoolDiscovery, Timestamp, oid_hex};
use crate::storeext;

/// How long to wait for MOUNT_READY after SUBSCRIBE.
const MOUNT_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Receive tick of the event loop (stop flag checks).
const RECV_TICK: Duration = Duration::from_millis(500);
/// HEAT_SAMPLE events folded into one store transaction at most.
const HEAT_BATCH_EVENTS: usize = 64;

/// Pool sockets found now.
fn list_sockets(source: &PoolSource) -> Vec<PathBuf> {
    match source {
        PoolSource::Sockets(list) => list.clone(),
        PoolSource::SocketDir(dir) => {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return Vec::new();
            };
            let mut v: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "sock"))
                // The control plane's own API socket is not a pool.
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_none_or(|n| !n.starts_with("controlplane"))
                })
                .collect();
            v.sort();
            v
        }
    }
}

/// Identity of a socket file: a remount replaces it.
fn socket_identity(p: &Path) -> Option<(u64, u64, i64)> {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime_nsec() + m.ctime() * 1_000_000_000))
}

fn dir_mtime(source: &PoolSource) -> Option<(i64, i64)> {
    match source {
        PoolSource::SocketDir(d) => std::fs::metadata(d)
            .ok()
            .map(|m| (m.mtime(), m.mtime_nsec())),
        PoolSource::Sockets(_) => None,
    }
}

struct Attempt {
    identity: Option<(u64, u64, i64)>,
    at: Instant,
}

/// The discovery thread: starts a pool thread for every socket without a
/// live one; retries a failed socket when it is replaced or after the
/// rescan interval.
pub(crate) fn run(shared: Arc<Shared>) {
    let mut threads: HashMap<PathBuf, JoinHandle<()>> = HashMap::new();
    let mut attempts: HashMap<PathBuf, Attempt> = HashMap::new();
    let mut last_scan: Option<Instant> = None;
    let mut last_mtime = None;
    loop {
        if shared.stopping() {
            break;
        }
        let mtime = dir_mtime(&shared.source);
        let due = last_scan.is_none_or(|t| t.elapsed() >= shared.rescan_interval)
            || mtime != last_mtime
            || matches!(shared.source, PoolSource::Sockets(_));
        if due {
            last_scan = Some(Instant::now());
            last_mtime = mtime;
            threads.retain(|_, h| !h.is_finished());
            for sock in list_sockets(&shared.source) {
                if threads.contains_key(&sock) {
                    continue;
                }
                let identity = socket_identity(&sock);
                if identity.is_none() {
                    continue;
                }
                if let Some(a) = attempts.get(&sock)
                    && a.identity == identity
                    && a.at.elapsed() < shared.rescan_interval
                {
                    continue;
                }
                attempts.insert(
                    sock.clone(),
                    Attempt {
                        identity,
                        at: Instant::now(),
                    },
                );
                let sh = Arc::clone(&shared);
                let path = sock.clone();
                match std::thread::Builder::new()
                    .name("cp-pool".into())
                    .spawn(move || pool_thread(sh, path))
                {
                    Ok(h) => {
                        threads.insert(sock, h);
                    }
                    Err(e) => tracing::error!("cannot start a pool thread: {e}"),
                }
            }
        }
        shared.sleep(Duration::from_secs(1));
    }
    for (_, h) in threads {
        let _ = h.join();
    }
}

/// One pool: discovery, recovery, inventory, pruning, then its events.
fn pool_thread(shared: Arc<Shared>, socket: PathBuf) {
    let (mut client, mut events) = match connect(&socket) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(socket = %socket.display(), "pool discovery: {e}; retried at the next scan");
            return;
        }
    };
    let closer = events.closer();
    shared.add_closer(&socket, closer.clone());
    if shared.stopping() {
        closer.close();
    }
    let mr = match events.recv_timeout(MOUNT_READY_TIMEOUT) {
        Ok(ev) => match ev.event {
            Event::MountReady(m) => m,
            other => {
                tracing::warn!(socket = %socket.display(),
                    "pool discovery: first event is {} , not MOUNT_READY", other.name());
                shared.remove_closer(&socket);
                return;
            }
        },
        Err(e) => {
            tracing::warn!(socket = %socket.display(), "pool discovery: no MOUNT_READY: {e}");
            shared.remove_closer(&socket);
            return;
        }
    };
    let Some(pool) = register(&shared, &socket, &mr) else {
        shared.remove_closer(&socket);
        return;
    };
    let name = pool.name();
    prepare(&shared, &pool, &mut client);
    if !shared.stopping() {
        pool.ready.store(true, Ordering::SeqCst);
        tracing::info!(pool = %name, uuid = %pool.uuid, "pool ready for planning");
        shared.request_tick();
    }
    event_loop(&shared, &pool, &mut client, &mut events);
    pool.online.store(false, Ordering::SeqCst);
    pool.ready.store(false, Ordering::SeqCst);
    let dropped = shared.queue.drop_pool(&pool.uuid);
    shared.remove_closer(&socket);
    if !shared.stopping() {
        tracing::warn!(pool = %name, uuid = %pool.uuid, dropped_plans = dropped,
            "pool socket closed: pool offline (nothing is planned for it until it returns)");
    }
}

fn connect(socket: &Path) -> Result<(Client, EventStream), UapiError> {
    let client = Client::connect(socket)?;
    let events = client.subscribe(EVENT_MASK_ALL)?;
    Ok((client, events))
}

/// S22.2/2–4: register (or refresh) the pool from MOUNT_READY.
fn register(shared: &Arc<Shared>, socket: &Path, mr: &MountReady) -> Option<Arc<PoolRuntime>> {
    let disc = PoolDiscovery::from(mr);
    let record = match lock(&shared.store).register_pool(&disc) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(socket = %socket.display(), pool = %mr.pool_name,
                "pool discovery failed: {e}; retried at the next scan");
            return None;
        }
    };
    let next_seq = match lock(&shared.store).next_transaction_seq(&record.namespace_id) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(pool = %mr.pool_name, "store: {e}");
            return None;
        }
    };
    let pool = shared.pool_runtime(mr.pool_uuid, socket, record, next_seq);
    {
        let mut flags = lock(&pool.tier_flags);
        flags.clear();
        for t in &mr.tiers {
            flags.push(crate::daemon::TierFlags {
                faulted: t.state == TierState::Faulted,
                down: t.state == TierState::Down,
                ..Default::default()
            });
        }
    }
    pool.spill
        .store(mr.any_spill_since_mount, Ordering::Relaxed);
    pool.online.store(true, Ordering::SeqCst);
    tracing::info!(pool = %mr.pool_name, uuid = %mr.pool_uuid, tiers = mr.tiers.len(),
        socket = %socket.display(), "pool discovered");
    Some(pool)
}

/// S22.2/5: recovery, inventory (aborting orphaned plans), PRUNE_DIRS.
fn prepare(shared: &Arc<Shared>, pool: &Arc<PoolRuntime>, client: &mut Client) {
    let record = pool.record();
    match recovery::recover_pool(&shared.store, client, &pool.uuid, &record) {
        Ok(r) => shared.counters.add_recovery(&r, &shared.metrics),
        Err(e) => tracing::error!(pool = %record.name, "recovery: store error: {e}"),
    }
    if shared.stopping() {
        return;
    }
    let queue = &shared.queue;
    match inventory::sync(&shared.store, client, &pool.uuid, &record, true, &|oid| {
        queue.is_busy(oid)
    }) {
        Ok(r) => {
            pool.bump_seq_past(r.max_orphan_seq);
            *lock(&pool.last_inventory) = Some(Instant::now());
        }
        Err(e) => tracing::warn!(pool = %record.name, "inventory: {e}"),
    }
    if shared.stopping() {
        return;
    }
    shared.prune(pool, client);
}

fn event_loop(
    shared: &Arc<Shared>,
    pool: &Arc<PoolRuntime>,
    client: &mut Client,
    events: &mut EventStream,
) {
    let mut pending: Option<Event> = None;
    loop {
        if shared.stopping() {
            return;
        }
        let ev = match pending.take() {
            Some(e) => e,
            None => match events.recv_timeout(RECV_TICK) {
                Ok(ev) => ev.event,
                Err(UapiError::Timeout(_)) => continue,
                Err(UapiError::Wire(e)) => {
                    tracing::warn!(pool = %pool.name(), "malformed event skipped: {e}");
                    continue;
                }
                Err(_) => return,
            },
        };
        match ev {
            Event::HeatSample(h) => {
                let mut records = h.records;
                let mut n = 1;
                // Fold the backlog into one transaction (S7.1/3 applies a
                // whole event in one; several whole events per transaction
                // keep that).
                while n < HEAT_BATCH_EVENTS {
                    match events.recv_timeout(Duration::from_millis(1)) {
                        Ok(e) => match e.event {
                            Event::HeatSample(more) => {
                                records.extend(more.records);
                                n += 1;
                            }
                            other => {
                                pending = Some(other);
                                break;
                            }
                        },
                        Err(UapiError::Timeout(_)) | Err(UapiError::Wire(_)) => break,
                        Err(_) => {
                            ingest_heat(shared, pool, client, &records);
                            return;
                        }
                    }
                }
                ingest_heat(shared, pool, client, &records);
            }
            Event::ObjectRemoved(r) => {
                lock(&shared.heat).forget(&r.oid);
                match lock(&shared.store).mark_stale(&r.oid, Timestamp::now()) {
                    Ok(true) => tracing::debug!(pool = %pool.name(), oid = %oid_hex(&r.oid),
                        "object removed: row stale"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(pool = %pool.name(), "store: {e}"),
                }
                // A running move of it stops at its next store write.
            }
            Event::TierFault(f) => {
                tracing::warn!(pool = %pool.name(), tier = f.tier_rank, errno = f.fault_errno,
                    state = %f.tier_state, "tier fault: nothing is planned into or out of it");
                pool.set_tier_state(f.tier_rank, f.tier_state);
            }
            Event::TierResumed(t) => {
                tracing::info!(pool = %pool.name(), tier = t.tier_rank, "tier resumed");
                pool.set_tier_state(t.tier_rank, t.tier_state);
            }
            Event::Spill(s) => {
                pool.spill.store(true, Ordering::Relaxed);
                tracing::info!(pool = %pool.name(), oid = %oid_hex(&s.oid),
                    first = s.first_tier, landed = s.landed_tier, path = %s.rel_path.display(),
                    "spill");
            }
            Event::MoveState(m) => move_state(shared, pool, &m),
            Event::MountReady(_) | Event::Unknown(_) => {}
        }
    }
}

/// MOVE_STATE (S22.2/6): logs; a move that is not one of ours (an
/// operator's `smoothfs move`) that ended on another tier updates the row.
fn move_state(shared: &Arc<Shared>, pool: &Arc<PoolRuntime>, m: &MoveState) {
    tracing::debug!(pool = %pool.name(), oid = %oid_hex(&m.oid), seq = m.transaction_seq,
        state = %m.movement_state, tier = m.current_tier, "MOVE_STATE");
    if m.movement_state != MovementState::CleanupComplete || shared.queue.is_busy(&m.oid) {
        return;
    }
    let record = pool.record();
    if let Some(t) = record.tier(m.current_tier) {
        let _ =
            storeext::set_current_tier(&mut lock(&shared.store), &m.oid, &t.id, Timestamp::now());
    }
}

/// Apply heat records; INSPECT unknown OIDs and create their rows (S7.3).
fn ingest_heat(
    shared: &Arc<Shared>,
    pool: &Arc<PoolRuntime>,
    client: &mut Client,
    records: &[HeatRecord],
) {
    let half_life = shared.policy.half_life_secs();
    let now = Timestamp::now();
    let ingested = {
        let mut h = lock(&shared.heat);
        let st = lock(&shared.store);
        h.ingest(&st, records, now, half_life)
    };
    if lock(&shared.heat_flushed).elapsed() >= crate::daemon::HEAT_FLUSH_INTERVAL {
        shared.flush_heat();
    }
    let ingest = match ingested {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(pool = %pool.name(), "heat ingest: store: {e}");
            return;
        }
    };
    shared
        .counters
        .heat_records
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    shared
        .metrics
        .heat_applied(&pool.name(), ingest.applied as u64);
    if ingest.unknown.is_empty() {
        return;
    }
    let record = pool.record();
    let mut created = std::collections::HashSet::new();
    for oid in &ingest.unknown {
        match dataplane::inspect(client, &pool.uuid, oid) {
            Ok(i) if i.kind == ObjectKind::Regular => {
                let Some(tier) = record.tier(i.current_tier) else {
                    continue;
                };
                let new = NewObject {
                    oid: *oid,
                    namespace_id: record.namespace_id.clone(),
                    current_tier_id: tier.id.clone(),
                    rel_path: i.rel_path.to_string_lossy().into_owned(),
                    size_bytes: i.size_bytes,
                    mtime_ns: i.mtime_ns,
                    pin_state: i.pin_state,
                    policy_pin: i.policy_pin,
                    mediated: false,
                    object_gen: 0,
                };
                match lock(&shared.store).insert_object(&new, now) {
                    Ok(_) => {
                        created.insert(*oid);
                    }
                    Err(e) => tracing::warn!(pool = %record.name, oid = %oid_hex(oid),
                        "store: cannot create the row: {e}"),
                }
            }
            Ok(_) => {}
            Err(e) if e.errno() == libc::ENOENT => {}
            Err(e) => tracing::debug!(pool = %record.name, oid = %oid_hex(oid),
                "INSPECT for an unknown heat record: {e}"),
        }
    }
    if created.is_empty() {
        return;
    }
    let pending: Vec<HeatRecord> = records
        .iter()
        .filter(|r| created.contains(&r.oid))
        .copied()
        .collect();
    let r = {
        let mut h = lock(&shared.heat);
        let st = lock(&shared.store);
        h.ingest(&st, &pending, now, half_life)
    };
    if let Err(e) = r {
        tracing::warn!(pool = %record.name, "heat ingest: store: {e}");
    }
}
