//! The control-plane daemon (S7, S9, S10, S19, S22): one [`ControlPlane`]
//! per host (`smoothfs controlplane`) or per pool (`smoothfs up`).
//!
//! Owns: the one [`Store`] (a single writer behind a mutex, S22.1/1), the
//! effective [`PolicyConfig`] (store config overlaid with `--policy`
//! overrides, which are persisted), the threads — discovery and one per
//! pool ([`crate::discovery`]), the planner tick, the worker pool
//! ([`crate::workers`]) and the control API — and shutdown: stop planning,
//! cancel running copies (the worker aborts their plans), close the event
//! sockets (a blocked receive returns at once, S22.2/A6), join every
//! thread.
//!
//! The planner tick (S22.3) runs at start (as soon as a pool is ready) and
//! every `smoothfs_planner_interval_seconds`: per online pool with at least
//! two tiers it refreshes tier states and masks from STATUS, runs the
//! periodic inventory when due (S7.4) and PRUNE_DIRS (S15.3/1), measures
//! each tier's fill with statvfs of its lower directory (the last value on
//! error; never measured = full), subtracts plans already queued or
//! running from their source tier and adds them to their destination,
//! runs [`planner::plan`], logs deferrals worth telling (S9.3/4) and
//! queues the plans.
//!
//! Control API (S26.6/3): a Unix stream socket (mode 0600) taking one JSON
//! request per line, `{"op": …, "args": {…}}`, answered by
//! `{"ok": true, "result": …}` or `{"ok": false, "errno": "ENOENT",
//! "message": …}`. Ops: `ping`; `move_status` (running moves with progress,
//! queued plans, pools); `move_abort` `{"object_id": hex}` (S9.6/2: cancels
//! the copy, the worker sends MOVE_ABORT, the row is `placed` with
//! `next_attempt_at` = now + cooldown; an unstarted plan is unqueued);
//! `move_retry` `{"object_id": hex}` (S9.5/2: `attempts` = 0).
//!
//! Must never: plan for a pool that is offline or not yet recovered, hold
//! the store lock across a socket request, or let two moves of one object
//! run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smoothfs_uapi::client::{Client, Closer};
use smoothfs_uapi::error::errno_name;
use smoothfs_uapi::ids::TierState;
use uuid::Uuid;

use crate::config::PolicyConfig;
use crate::copy::Throttle;
use crate::dataplane;
use crate::inventory;
use crate::metrics::{ActionLabels, DecisionLabels, Metrics, MetricsServer, TierSample};
use crate::pinrules;
use crate::planner::{self, PlanInput, TierInput, Verdict};
use crate::recovery::RecoveryReport;
use crate::store::{
    PoolRecord, STALE_RETENTION_SECS, Store, StoreError, Timestamp, oid_hex, parse_oid,
};
use crate::storeext;
use crate::workers::{
    self, Job, MoveResult, MoveTracker, OPERATOR_ABORT_REASON, PlannedMove, Queue,
    SHUTDOWN_ABORT_REASON,
};

/// Default pool-socket directory (S20.1/1).
pub const DEFAULT_SOCKET_DIR: &str = "/run/smoothfs";
/// Default control API socket (S26.6/3, S29.2).
pub const DEFAULT_API_SOCKET: &str = "/run/smoothfs/controlplane.sock";
/// Socket directory rescan interval (S22.2/1).
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(30);
/// How long `stop` waits for threads before giving up on them.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `move_abort` request waits for the running move to end.
const ABORT_WAIT: Duration = Duration::from_secs(3);

/// Lock a mutex, taking over a poisoned one (a panicked thread must not
/// stop the daemon; every guarded value stays consistent between
/// statements).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Where pools are found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolSource {
    /// Every `*.sock` in this directory (`smoothfs controlplane`).
    SocketDir(PathBuf),
    /// Exactly these sockets (`smoothfs up`, tests).
    Sockets(Vec<PathBuf>),
}

/// How to start a control plane.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub db_path: PathBuf,
    /// `--policy KEY=VALUE`, stored into `control_plane_config`.
    pub policy_overrides: Vec<(String, String)>,
    pub pools: PoolSource,
    /// The control API socket; `None` = no API.
    pub api_socket: Option<PathBuf>,
    pub rescan_interval: Duration,
}

impl DaemonOptions {
    /// Defaults: every pool in `/run/smoothfs`, API at
    /// `/run/smoothfs/controlplane.sock`.
    pub fn new(db_path: impl Into<PathBuf>) -> DaemonOptions {
        DaemonOptions {
            db_path: db_path.into(),
            policy_overrides: Vec::new(),
            pools: PoolSource::SocketDir(PathBuf::from(DEFAULT_SOCKET_DIR)),
            api_socket: Some(PathBuf::from(DEFAULT_API_SOCKET)),
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
        }
    }
}

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("control API socket {}: {message}", path.display())]
    Api { path: PathBuf, message: String },
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

// ---------------------------------------------------------------------------
// Pools at run time
// ---------------------------------------------------------------------------

/// A tier's state for planning (S22.3/2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierFlags {
    pub faulted: bool,
    pub down: bool,
    /// Not in `metadata_active_tier_mask`.
    pub inactive: bool,
    /// In `create_disabled_tier_mask`.
    pub create_disabled: bool,
}

/// One discovered pool.
pub struct PoolRuntime {
    pub uuid: Uuid,
    socket: Mutex<PathBuf>,
    record: Mutex<PoolRecord>,
    /// The event socket is open.
    pub online: AtomicBool,
    /// Recovery and the first inventory are done: planning allowed.
    pub ready: AtomicBool,
    pub spill: AtomicBool,
    pub(crate) tier_flags: Mutex<Vec<TierFlags>>,
    /// The next transaction seq (S10.1/2).
    next_seq: AtomicU64,
    /// Last measured `(size, used)` per rank.
    last_fill: Mutex<Vec<Option<(u64, u64)>>>,
    pub(crate) last_inventory: Mutex<Option<Instant>>,
}

impl PoolRuntime {
    pub fn record(&self) -> PoolRecord {
        lock(&self.record).clone()
    }

    pub fn name(&self) -> String {
        lock(&self.record).name.clone()
    }

    pub fn socket(&self) -> PathBuf {
        lock(&self.socket).clone()
    }

    pub fn tier_flags(&self) -> Vec<TierFlags> {
        lock(&self.tier_flags).clone()
    }

    pub(crate) fn set_tier_state(&self, rank: u8, state: TierState) {
        let mut f = lock(&self.tier_flags);
        let i = usize::from(rank);
        if f.len() <= i {
            f.resize(i + 1, TierFlags::default());
        }
        f[i].faulted = state == TierState::Faulted;
        f[i].down = state == TierState::Down;
    }

    fn take_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::SeqCst)
    }

    pub(crate) fn bump_seq_past(&self, seen: u64) {
        if seen > 0 {
            self.next_seq.fetch_max(seen + 1, Ordering::SeqCst);
        }
    }
}

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

/// Counters for status and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub moves_success: AtomicU64,
    pub moves_failed: AtomicU64,
    pub moves_aborted: AtomicU64,
    pub moves_refused: AtomicU64,
    pub heat_records: AtomicU64,
    pub planner_ticks: AtomicU64,
    pub plans_queued: AtomicU64,
    pub recovery_rolled_back: AtomicU64,
    pub recovery_forwarded: AtomicU64,
    pub recovery_gone: AtomicU64,
}

impl Counters {
    pub(crate) fn add_recovery(&self, r: &RecoveryReport, metrics: &Metrics) {
        for (action, n) in [
            ("rolled_back", r.rolled_back),
            ("forwarded", r.forwarded),
            ("gone", r.gone),
            ("failed_repointed", r.failed_repointed),
            ("left_alone", r.left_alone),
            ("lun_repaired", r.lun_repaired),
            ("lun_repair_failed", r.lun_repair_failed),
        ] {
            if n > 0 {
                metrics
                    .recovery_rows
                    .get_or_create(&ActionLabels {
                        action: action.to_string(),
                    })
                    .inc_by(n as u64);
            }
        }
        self.recovery_rolled_back
            .fetch_add(r.rolled_back as u64, Ordering::Relaxed);
        self.recovery_forwarded
            .fetch_add(r.forwarded as u64, Ordering::Relaxed);
        self.recovery_gone
            .fetch_add(r.gone as u64, Ordering::Relaxed);
    }

    fn to_json(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "moves_success": g(&self.moves_success),
            "moves_failed": g(&self.moves_failed),
            "moves_aborted": g(&self.moves_aborted),
            "moves_refused": g(&self.moves_refused),
            "heat_records": g(&self.heat_records),
            "planner_ticks": g(&self.planner_ticks),
            "plans_queued": g(&self.plans_queued),
            "recovery_rolled_back": g(&self.recovery_rolled_back),
            "recovery_forwarded": g(&self.recovery_forwarded),
            "recovery_gone": g(&self.recovery_gone),
        })
    }
}

pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    /// Write-behind heat (S7.1): lock before `store` when both are held.
    pub(crate) heat: Mutex<crate::heat::HeatCache>,
    pub(crate) heat_flushed: Mutex<Instant>,
    pub(crate) policy: PolicyConfig,
    pub(crate) source: PoolSource,
    pub(crate) rescan_interval: Duration,
    pools: Mutex<HashMap<Uuid, Arc<PoolRuntime>>>,
    closers: Mutex<HashMap<PathBuf, Closer>>,
    stop: AtomicBool,
    wake: Mutex<u64>,
    wake_cv: Condvar,
    tick_requested: AtomicBool,
    pub(crate) queue: Queue,
    throttle: Arc<Throttle>,
    pub(crate) counters: Counters,
    /// Prometheus families (S26.2), served when `smoothfs_metrics_listen`
    /// is set.
    pub(crate) metrics: Arc<Metrics>,
    metrics_addr: Mutex<Option<String>>,
}

impl Shared {
    /// Write pending heat to the store (before planning, every few seconds
    /// of ingest, and at stop).
    pub(crate) fn flush_heat(&self) {
        let mut h = lock(&self.heat);
        if let Err(e) = h.flush(&mut lock(&self.store)) {
            tracing::warn!("heat flush: store: {e}");
        }
        *lock(&self.heat_flushed) = Instant::now();
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleep up to `d`, returning early on stop or any wake-up.
    pub(crate) fn sleep(&self, d: Duration) {
        let g = lock(&self.wake);
        if self.stopping() {
            return;
        }
        let _ = self.wake_cv.wait_timeout(g, d);
    }

    fn wake_all(&self) {
        *lock(&self.wake) += 1;
        self.wake_cv.notify_all();
    }

    /// Ask the planner for a tick now (a pool became ready).
    pub(crate) fn request_tick(&self) {
        self.tick_requested.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    pub(crate) fn add_closer(&self, socket: &Path, c: Closer) {
        lock(&self.closers).insert(socket.to_path_buf(), c);
    }

    pub(crate) fn remove_closer(&self, socket: &Path) {
        lock(&self.closers).remove(socket);
    }

    /// The runtime entry of a pool, created or refreshed from a new
    /// registration (a remount may bring new tier paths, S22.2/4).
    pub(crate) fn pool_runtime(
        &self,
        uuid: Uuid,
        socket: &Path,
        record: PoolRecord,
        next_seq: u64,
    ) -> Arc<PoolRuntime> {
        let mut pools = lock(&self.pools);
        if let Some(p) = pools.get(&uuid) {
            *lock(&p.record) = record;
            *lock(&p.socket) = socket.to_path_buf();
            p.next_seq.fetch_max(next_seq, Ordering::SeqCst);
            return Arc::clone(p);
        }
        let n = record.tiers.len();
        let p = Arc::new(PoolRuntime {
            uuid,
            socket: Mutex::new(socket.to_path_buf()),
            record: Mutex::new(record),
            online: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            spill: AtomicBool::new(false),
            tier_flags: Mutex::new(vec![TierFlags::default(); n]),
            next_seq: AtomicU64::new(next_seq),
            last_fill: Mutex::new(vec![None; n]),
            last_inventory: Mutex::new(None),
        });
        pools.insert(uuid, Arc::clone(&p));
        p
    }

    fn pools(&self) -> Vec<Arc<PoolRuntime>> {
        let mut v: Vec<_> = lock(&self.pools).values().cloned().collect();
        v.sort_by_key(|p| p.name());
        v
    }

    fn pool(&self, uuid: &Uuid) -> Option<Arc<PoolRuntime>> {
        lock(&self.pools).get(uuid).cloned()
    }

    /// PRUNE_DIRS (S15.3/1); errors are logged.
    pub(crate) fn prune(&self, pool: &PoolRuntime, client: &mut Client) {
        match inventory::prune_dirs(client, &pool.uuid, None) {
            Ok(r) if r.dirs_removed > 0 || r.dirs_updated > 0 => tracing::info!(
                pool = %pool.name(), removed = r.dirs_removed, updated = r.dirs_updated,
                kept = r.dirs_kept, "PRUNE_DIRS"),
            Ok(_) => {}
            Err(e) => tracing::warn!(pool = %pool.name(), "PRUNE_DIRS: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The control plane
// ---------------------------------------------------------------------------

/// A running control plane. [`ControlPlane::stop`] (or drop) shuts it
/// down.
pub struct ControlPlane {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    api_socket: Option<PathBuf>,
    metrics_server: Mutex<Option<MetricsServer>>,
}

/// A pool as [`ControlPlane::pools`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSummary {
    pub name: String,
    pub uuid: Uuid,
    pub online: bool,
    pub ready: bool,
    pub tiers: Vec<PathBuf>,
}

impl ControlPlane {
    /// Open the store, apply and persist the policy overrides, bind the
    /// API socket and start every thread.
    pub fn start(opts: DaemonOptions) -> Result<ControlPlane, DaemonError> {
        let mut store = Store::open(&opts.db_path)?;
        for (key, value) in &opts.policy_overrides {
            match store.set_policy_value(key, value)? {
                Ok(()) => tracing::info!("policy {key} = {value} (stored)"),
                Err(e) => tracing::warn!("--policy: {e}; ignored"),
            }
        }
        let (policy, warnings) = store.load_policy()?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        tracing::info!(
            db = %opts.db_path.display(),
            planner_interval_s = policy.planner_interval_seconds,
            workers = policy.worker_count,
            "control plane starting"
        );
        let listener = match &opts.api_socket {
            Some(p) => Some(bind_api(p)?),
            None => None,
        };
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            heat: Mutex::new(crate::heat::HeatCache::new()),
            heat_flushed: Mutex::new(Instant::now()),
            throttle: Arc::new(Throttle::new(policy.move_bandwidth_bytes_per_s)),
            policy,
            source: opts.pools.clone(),
            rescan_interval: opts.rescan_interval,
            pools: Mutex::new(HashMap::new()),
            closers: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
            wake: Mutex::new(0),
            wake_cv: Condvar::new(),
            tick_requested: AtomicBool::new(false),
            queue: Queue::new(),
            counters: Counters::default(),
            metrics: Arc::new(Metrics::new()),
            metrics_addr: Mutex::new(None),
        });
        let listen = shared.policy.metrics_listen.clone();
        let metrics_server = if listen.is_empty() {
            None
        } else {
            match MetricsServer::start(Arc::clone(&shared.metrics), &listen) {
                Ok(m) => {
                    let addr = m.local_addr().to_string();
                    tracing::info!(listen = %addr, "metrics served at http://{addr}/metrics");
                    *lock(&shared.metrics_addr) = Some(addr);
                    Some(m)
                }
                Err(e) => {
                    tracing::warn!(listen = %listen, "metrics endpoint not started: {e}");
                    None
                }
            }
        };
        let cp = ControlPlane {
            shared: Arc::clone(&shared),
            threads: Mutex::new(Vec::new()),
            api_socket: opts.api_socket.clone(),
            metrics_server: Mutex::new(metrics_server),
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(f)
                .map_err(DaemonError::Thread)
        };
        let mut threads = Vec::new();
        let result = (|| -> Result<(), DaemonError> {
            let sh = Arc::clone(&shared);
            threads.push(spawn(
                "cp-discovery",
                Box::new(move || crate::discovery::run(sh)),
            )?);
            let sh = Arc::clone(&shared);
            threads.push(spawn("cp-planner", Box::new(move || planner_loop(&sh)))?);
            for i in 0..shared.policy.worker_count.max(1) {
                let sh = Arc::clone(&shared);
                threads.push(spawn(
                    &format!("cp-worker-{i}"),
                    Box::new(move || worker_loop(&sh)),
                )?);
            }
            if let Some(l) = listener {
                let sh = Arc::clone(&shared);
                threads.push(spawn("cp-api", Box::new(move || api_loop(&sh, l)))?);
            }
            Ok(())
        })();
        *lock(&cp.threads) = threads;
        result?;
        Ok(cp)
    }

    /// The effective policy.
    pub fn policy(&self) -> &PolicyConfig {
        &self.shared.policy
    }

    /// Discovered pools.
    pub fn pools(&self) -> Vec<PoolSummary> {
        self.shared
            .pools()
            .iter()
            .map(|p| {
                let r = p.record();
                PoolSummary {
                    name: r.name.clone(),
                    uuid: p.uuid,
                    online: p.online.load(Ordering::SeqCst),
                    ready: p.ready.load(Ordering::SeqCst),
                    tiers: r
                        .tiers
                        .iter()
                        .map(|t| PathBuf::from(&t.backing_ref))
                        .collect(),
                }
            })
            .collect()
    }

    /// Run a planner tick as soon as possible.
    pub fn tick_now(&self) {
        self.shared.request_tick();
    }

    /// `move_status` (running moves, queued plans, pools, counters).
    pub fn status(&self) -> Value {
        status_json(&self.shared)
    }

    /// S9.6/2: cancel a running move of `oid` or unqueue its plan.
    pub fn abort_move(&self, oid: &[u8; 16]) -> Result<Value, (i32, String)> {
        abort_move(&self.shared, oid)
    }

    /// S9.5/2: `attempts` = 0 for `oid`.
    pub fn retry_move(&self, oid: &[u8; 16]) -> Result<bool, StoreError> {
        lock(&self.shared.store).reset_attempts(oid, Timestamp::now())
    }

    /// Whether [`ControlPlane::stop`] ran.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopping()
    }

    /// Stop planning, cancel running copies (their plans are aborted and
    /// recorded), close every pool socket and join the threads. Idempotent.
    pub fn stop(&self) {
        let first = !self.shared.stop.swap(true, Ordering::SeqCst);
        if first {
            tracing::info!("control plane stopping");
        }
        self.shared.queue.cancel_all(SHUTDOWN_ABORT_REASON);
        for c in lock(&self.shared.closers).values() {
            c.close();
        }
        self.shared.wake_all();
        self.shared.queue.wake_all();
        let threads: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.threads));
        let deadline = Instant::now() + JOIN_TIMEOUT;
        for t in threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("a control-plane thread did not stop in time");
            }
        }
        self.shared.flush_heat();
        if let Some(m) = lock(&self.metrics_server).take() {
            m.stop();
        }
        if first && let Some(p) = &self.api_socket {
            let _ = std::fs::remove_file(p);
        }
        if first {
            tracing::info!("control plane stopped");
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// Planner tick
// ---------------------------------------------------------------------------

/// Deferred decisions worth a log row (S9.3/4); the others (residency,
/// cooldown, backoff, offline) are routine and would only repeat.
fn worth_logging(r: planner::Reason) -> bool {
    use planner::Reason::*;
    matches!(
        r,
        DeferredDestinationFull
            | DeferredNoSwapVictim
            | DeferredTierFaulted
            | DeferredTierInactive
            | DeferredTickLimit
    )
}

/// The longest heat stays only in memory (write-behind, S7.1).
pub(crate) const HEAT_FLUSH_INTERVAL: Duration = Duration::from_secs(2);

fn planner_loop(shared: &Arc<Shared>) {
    let interval = Duration::from_secs(shared.policy.planner_interval_seconds.max(1));
    let mut last_housekeeping: Option<Instant> = None;
    let mut last_rules_poll = Instant::now();
    loop {
        if shared.stopping() {
            return;
        }
        shared.tick_requested.store(false, Ordering::SeqCst);
        let started = Instant::now();
        tick(shared);
        shared.metrics.planner_tick(started.elapsed().as_secs_f64());
        shared
            .counters
            .planner_ticks
            .fetch_add(1, Ordering::Relaxed);
        if last_housekeeping.is_none_or(|t| t.elapsed() >= Duration::from_secs(86400)) {
            housekeeping(shared);
            last_housekeeping = Some(Instant::now());
        }
        let deadline = started + interval;
        loop {
            if shared.stopping() {
                return;
            }
            if shared.tick_requested.load(Ordering::SeqCst) || Instant::now() >= deadline {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            shared.sleep(left.min(Duration::from_secs(1)));
            // Heat applied in memory reaches the store within ~2 s.
            if lock(&shared.heat).dirty() > 0
                && lock(&shared.heat_flushed).elapsed() >= HEAT_FLUSH_INTERVAL
            {
                shared.flush_heat();
            }
            if last_rules_poll.elapsed() >= PIN_RULES_POLL {
                last_rules_poll = Instant::now();
                poll_pin_rules(shared);
            }
        }
    }
}

/// How often the planner loop checks the pin rules between ticks (S8.6/4).
const PIN_RULES_POLL: Duration = Duration::from_secs(5);

/// Apply the pin rules of every ready pool whose rules changed since they
/// were last applied (S8.6/4: within 60 s of a rule change).
fn poll_pin_rules(shared: &Shared) {
    for pool in shared.pools() {
        if shared.stopping() {
            return;
        }
        if !pool.online.load(Ordering::SeqCst) || !pool.ready.load(Ordering::SeqCst) {
            continue;
        }
        let record = pool.record();
        match pinrules::rules_changed(&shared.store, &record.namespace_id) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(pool = %record.name, "pin rules: {e}");
                continue;
            }
        }
        let r = Client::connect(pool.socket())
            .map_err(|e| e.to_string())
            .and_then(|mut c| {
                pinrules::apply_pool(&shared.store, &mut c, &pool.uuid, &record)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = r {
            tracing::warn!(pool = %record.name, "pin rules: {e}");
        }
    }
}

/// S22.1/6 and S7.4/3, once a day.
fn housekeeping(shared: &Shared) {
    let now = Timestamp::now();
    let mut st = lock(&shared.store);
    let days = shared.policy.log_retention_days;
    match st.delete_log_before(now.sub_secs(days.saturating_mul(86400))) {
        Ok(n) if n > 0 => tracing::info!(rows = n, "movement log: old rows deleted"),
        Ok(_) => {}
        Err(e) => tracing::warn!("movement log retention: {e}"),
    }
    match st.delete_stale_rows(now.sub_secs(STALE_RETENTION_SECS)) {
        Ok(n) if n > 0 => tracing::info!(rows = n, "stale rows deleted"),
        Ok(_) => {}
        Err(e) => tracing::warn!("stale row retention: {e}"),
    }
}

fn tick(shared: &Arc<Shared>) {
    shared.flush_heat();
    for pool in shared.pools() {
        if shared.stopping() {
            return;
        }
        if !pool.online.load(Ordering::SeqCst) || !pool.ready.load(Ordering::SeqCst) {
            continue;
        }
        if let Err(e) = plan_pool(shared, &pool) {
            tracing::warn!(pool = %pool.name(), "planner tick: {e}");
        }
    }
}

fn parse_mask(v: &str) -> Option<u64> {
    let v = v.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Refresh tier states and masks from STATUS.
fn refresh_tier_flags(pool: &PoolRuntime, status: &dataplane::PoolStatus) {
    let active = status
        .item("metadata_active_tier_mask")
        .and_then(parse_mask);
    let disabled = status
        .item("create_disabled_tier_mask")
        .and_then(parse_mask)
        .unwrap_or(0);
    let mut f = lock(&pool.tier_flags);
    for t in &status.tiers {
        let i = usize::from(t.rank);
        if f.len() <= i {
            f.resize(i + 1, TierFlags::default());
        }
        f[i].faulted = t.state == TierState::Faulted;
        f[i].down = t.state == TierState::Down;
        f[i].inactive = active.is_some_and(|m| t.rank < 64 && m & (1 << t.rank) == 0);
        f[i].create_disabled = t.rank < 64 && disabled & (1 << t.rank) != 0;
    }
}

/// `(size, used)` bytes of the filesystem holding `dir` (S22.3/2).
pub fn measure_tier(dir: &Path) -> std::io::Result<(u64, u64)> {
    let sv = rustix::fs::statvfs(dir)?;
    let unit = if sv.f_frsize > 0 {
        sv.f_frsize
    } else {
        sv.f_bsize
    };
    Ok((
        sv.f_blocks.saturating_mul(unit),
        sv.f_blocks.saturating_sub(sv.f_bavail).saturating_mul(unit),
    ))
}

/// The planner's tier inputs for a pool: measured fill (the last value
/// on error), thresholds, flags.
pub fn tier_inputs(
    record: &PoolRecord,
    flags: &[TierFlags],
    last: &mut Vec<Option<(u64, u64)>>,
) -> Vec<TierInput> {
    if last.len() < record.tiers.len() {
        last.resize(record.tiers.len(), None);
    }
    record
        .tiers
        .iter()
        .map(|t| {
            let i = usize::from(t.rank);
            match measure_tier(Path::new(&t.backing_ref)) {
                Ok(m) => last[i] = Some(m),
                Err(e) => tracing::warn!(tier = t.rank, path = %t.backing_ref,
                    "statvfs failed ({e}); using the last measurement"),
            }
            let f = flags.get(i).copied().unwrap_or_default();
            let (size, used) = match last[i] {
                Some((s, u)) => (s, Some(u)),
                None => (0, None),
            };
            TierInput {
                rank: t.rank,
                size_bytes: size,
                used_bytes: used,
                target_fill_pct: t.target_fill_pct,
                full_threshold_pct: t.full_threshold_pct,
                faulted: f.faulted,
                down: f.down,
                inactive: f.inactive,
                create_disabled: f.create_disabled,
            }
        })
        .collect()
}

fn plan_pool(shared: &Arc<Shared>, pool: &Arc<PoolRuntime>) -> Result<(), String> {
    let record = pool.record();
    if record.tiers.len() < 2 {
        return Ok(());
    }
    let mut client = Client::connect(pool.socket()).map_err(|e| e.to_string())?;
    match dataplane::status(&mut client, &pool.uuid) {
        Ok(st) => {
            refresh_tier_flags(pool, &st);
            let items: Vec<(String, String)> = st
                .items
                .iter()
                .map(|i| (i.name.clone(), i.value.clone()))
                .collect();
            shared
                .metrics
                .set_pool_status(&record.name, &pool.uuid.to_string(), &items);
        }
        Err(e) => tracing::debug!(pool = %record.name, "STATUS: {e}"),
    }
    let inventory_due = lock(&pool.last_inventory).is_none_or(|t| {
        t.elapsed() >= Duration::from_secs(shared.policy.inventory_interval_seconds)
    });
    if inventory_due {
        let queue = &shared.queue;
        match inventory::sync(
            &shared.store,
            &mut client,
            &pool.uuid,
            &record,
            false,
            &|oid| queue.is_busy(oid),
        ) {
            Ok(_) => *lock(&pool.last_inventory) = Some(Instant::now()),
            Err(e) => tracing::warn!(pool = %record.name, "inventory: {e}"),
        }
    }
    shared.prune(pool, &mut client);
    if let Err(e) = pinrules::apply_pool(&shared.store, &mut client, &pool.uuid, &record) {
        tracing::warn!(pool = %record.name, "pin rules: {e}");
    }
    drop(client);

    let flags = pool.tier_flags();
    let mut tiers = tier_inputs(&record, &flags, &mut lock(&pool.last_fill));
    // Plans already queued or running are not in the measured fill yet.
    for (from, to, total, done) in shared.queue.in_flight(&pool.uuid) {
        if let Some(t) = tiers.get_mut(usize::from(from))
            && let Some(u) = t.used_bytes.as_mut()
        {
            *u = u.saturating_sub(total);
        }
        if let Some(t) = tiers.get_mut(usize::from(to))
            && let Some(u) = t.used_bytes.as_mut()
        {
            *u = u.saturating_add(total.saturating_sub(done));
        }
    }
    let now = Timestamp::now();
    let mut objects = lock(&shared.store)
        .planning_objects(&record, now, shared.policy.half_life_secs())
        .map_err(|e| e.to_string())?;
    let busy = shared.queue.busy();
    for o in &mut objects {
        o.in_flight = busy.contains(&o.oid);
    }
    // The tick emits no more plans than the queue takes: the candidates
    // beyond are `deferred:tick-limit` (and planned again next tick)
    // rather than planned and then dropped unseen.
    let slots = u32::try_from(shared.queue.free_slots()).unwrap_or(u32::MAX);
    let limited;
    let config = if slots < shared.policy.max_moves_per_tick {
        limited = PolicyConfig {
            max_moves_per_tick: slots.max(1),
            ..shared.policy.clone()
        };
        &limited
    } else {
        &shared.policy
    };
    let out = planner::plan(&PlanInput {
        tiers: &tiers,
        objects: &objects,
        config,
        now,
        evacuation: None,
        pool_offline: false,
    });
    export_plan_metrics(shared, &record, &tiers, &out);
    {
        let mut st = lock(&shared.store);
        for d in &out.decisions {
            if d.verdict == Verdict::Deferred && worth_logging(d.reason) {
                let tier_id = record.tier(d.tier).map_or("", |t| t.id.as_str());
                if let Err(e) =
                    storeext::log_planner_deferral(&mut st, &d.oid, tier_id, d.reason.as_str(), now)
                {
                    tracing::warn!(oid = %oid_hex(&d.oid), "store: deferral log: {e}");
                }
            }
        }
    }
    let mut queued = 0;
    let mut dropped = 0;
    for p in &out.plans {
        let job = Job {
            pool_uuid: pool.uuid,
            oid: p.oid,
            from: p.from,
            to: p.to,
            size_bytes: p.size_bytes,
            reason: p.reason.as_str().to_string(),
            rel_path: String::new(),
            after: p.after,
        };
        match shared.queue.push(job) {
            Ok(()) => queued += 1,
            Err(workers::Rejected::AlreadyQueued) => {}
            Err(workers::Rejected::Full) => dropped += 1,
        }
    }
    if dropped > 0 {
        tracing::warn!(pool = %record.name, plans = dropped,
            "planner tick: plan queue full; these plans wait for the next tick");
    }
    let in_flight = shared.queue.in_flight(&pool.uuid).len();
    shared.metrics.set_in_flight(&record.name, in_flight as u64);
    if queued > 0 {
        shared
            .counters
            .plans_queued
            .fetch_add(queued, Ordering::Relaxed);
        tracing::info!(pool = %record.name, plans = queued, objects = objects.len(),
            "planner tick: plans queued");
    }
    Ok(())
}

/// Per-tier gauges and decision counters of one pass (S26.2).
fn export_plan_metrics(
    shared: &Shared,
    record: &PoolRecord,
    tiers: &[TierInput],
    out: &planner::PlanOutput,
) {
    let m = &shared.metrics;
    for (t, s) in tiers.iter().zip(&out.tiers) {
        let state = if t.faulted {
            1
        } else if t.down {
            2
        } else {
            0
        };
        m.set_tier(
            &record.name,
            &TierSample {
                rank: t.rank,
                fill_ratio: s.fill_pct.unwrap_or(100.0) / 100.0,
                objects: s.objects as u64,
                bytes_used: t.used_bytes.unwrap_or(0),
                state,
            },
        );
    }
    let mut counts: HashMap<&'static str, u64> = HashMap::new();
    for d in &out.decisions {
        *counts.entry(d.reason.as_str()).or_insert(0) += 1;
    }
    for (reason, n) in counts {
        m.planner_decisions
            .get_or_create(&DecisionLabels {
                pool: record.name.clone(),
                decision: reason.to_string(),
            })
            .inc_by(n);
    }
}

// ---------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------

fn worker_loop(shared: &Arc<Shared>) {
    if let Err(e) = crate::worker::set_thread_io_priority(shared.policy.move_ioprio) {
        tracing::debug!("cannot set the worker I/O priority: {e}");
    }
    let per_tier = shared.policy.per_tier_moves.max(1);
    let make = |job: &Job| {
        let (name, seq) = match shared.pool(&job.pool_uuid) {
            Some(p) => (p.name(), p.take_seq()),
            None => (String::new(), 0),
        };
        let t = MoveTracker::new(
            &name,
            job.pool_uuid,
            job.oid,
            &job.rel_path,
            job.from,
            job.to,
            &job.reason,
            seq,
        );
        t.set_expected_bytes(job.size_bytes);
        Arc::new(t)
    };
    loop {
        if shared.stopping() {
            return;
        }
        let Some((job, tracker)) = shared.queue.take(per_tier, Duration::from_secs(1), &make)
        else {
            continue;
        };
        let moved = run_job(shared, &job, &tracker);
        for w in shared.queue.done(&job, moved) {
            tracing::info!(oid = %oid_hex(&w.oid), victim = %oid_hex(&job.oid),
                "swap promotion dropped: its victim did not leave tier {}; the next tick plans again",
                w.to);
        }
    }
}

/// Run one queued move; whether the object now sits on the destination.
fn run_job(shared: &Arc<Shared>, job: &Job, tracker: &MoveTracker) -> bool {
    let Some(pool) = shared.pool(&job.pool_uuid) else {
        return false;
    };
    if !pool.online.load(Ordering::SeqCst) || shared.stopping() {
        return false;
    }
    let record = pool.record();
    let mut client = match Client::connect(pool.socket()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(pool = %record.name, "worker: cannot connect: {e}");
            return false;
        }
    };
    let mv = PlannedMove {
        pool: &record,
        pool_uuid: pool.uuid,
        oid: job.oid,
        to: job.to,
        transaction_seq: tracker.transaction_seq,
    };
    let throttle =
        (shared.policy.move_bandwidth_bytes_per_s > 0).then(|| Arc::clone(&shared.throttle));
    tracing::info!(pool = %record.name, oid = %oid_hex(&job.oid), seq = tracker.transaction_seq,
        from = job.from, to = job.to, reason = %job.reason, "move starting");
    let result = workers::run_planned_move(
        &shared.store,
        &mut client,
        &mv,
        &shared.policy,
        throttle,
        tracker,
    );
    let c = &shared.counters;
    let m = &shared.metrics;
    match &result {
        MoveResult::Moved { bytes, method } => {
            m.move_done(&record.name, "success", Some(method), *bytes)
        }
        MoveResult::Failed { .. } | MoveResult::Recovered(_) => {
            m.move_done(&record.name, "failed", None, 0)
        }
        MoveResult::Aborted(_) => m.move_done(&record.name, "aborted", None, 0),
        MoveResult::Refused(_) => m.move_done(&record.name, "refused", None, 0),
        _ => {}
    }
    match &result {
        MoveResult::Moved { .. } => c.moves_success.fetch_add(1, Ordering::Relaxed),
        MoveResult::Failed { .. } | MoveResult::Recovered(_) => {
            c.moves_failed.fetch_add(1, Ordering::Relaxed)
        }
        MoveResult::Aborted(_) => c.moves_aborted.fetch_add(1, Ordering::Relaxed),
        MoveResult::Refused(_) => c.moves_refused.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    tracing::info!(pool = %record.name, oid = %oid_hex(&job.oid), seq = tracker.transaction_seq,
        "move ended: {result:?}");
    matches!(result, MoveResult::Moved { .. })
}

// ---------------------------------------------------------------------------
// Control API
// ---------------------------------------------------------------------------

fn bind_api(path: &Path) -> Result<UnixListener, DaemonError> {
    let fail = |message: String| DaemonError::Api {
        path: path.to_path_buf(),
        message,
    };
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(fail(
                "another control plane is listening there; stop it first".into(),
            ));
        }
        std::fs::remove_file(path).map_err(|e| fail(format!("removing the stale socket: {e}")))?;
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating its directory: {e}")))?;
    }
    let l = UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(format!("chmod 0600: {e}")))?;
    l.set_nonblocking(true).map_err(|e| fail(e.to_string()))?;
    Ok(l)
}

fn api_loop(shared: &Arc<Shared>, listener: UnixListener) {
    loop {
        if shared.stopping() {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let sh = Arc::clone(shared);
                // One short-lived thread per client: a slow client cannot
                // hold up the others.
                let _ = std::thread::Builder::new()
                    .name("cp-api-conn".into())
                    .spawn(move || serve_api(&sh, stream));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                shared.sleep(Duration::from_millis(100));
            }
            Err(e) => {
                tracing::warn!("control API accept: {e}");
                shared.sleep(Duration::from_millis(500));
            }
        }
    }
}

fn serve_api(shared: &Arc<Shared>, stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let Ok(line) = line else {
            return;
        };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(req) => api_request(shared, &req),
            Err(e) => api_error(libc::EINVAL, &format!("not a JSON request: {e}")),
        };
        let mut text = reply.to_string();
        text.push('\n');
        if out.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

fn api_error(errno: i32, message: &str) -> Value {
    json!({"ok": false, "errno": errno_name(errno), "message": message})
}

fn api_oid(req: &Value) -> Result<[u8; 16], Value> {
    let s = req
        .pointer("/args/object_id")
        .and_then(Value::as_str)
        .unwrap_or("");
    parse_oid(s).ok_or_else(|| api_error(libc::EINVAL, "args.object_id must be 32 hex digits"))
}

fn api_request(shared: &Arc<Shared>, req: &Value) -> Value {
    let op = req.get("op").and_then(Value::as_str).unwrap_or("");
    match op {
        "ping" => json!({"ok": true, "result": "pong"}),
        "move_status" | "status" => json!({"ok": true, "result": status_json(shared)}),
        "move_abort" => match api_oid(req) {
            Ok(oid) => match abort_move(shared, &oid) {
                Ok(v) => json!({"ok": true, "result": v}),
                Err((errno, msg)) => api_error(errno, &msg),
            },
            Err(e) => e,
        },
        "move_retry" => match api_oid(req) {
            Ok(oid) => match lock(&shared.store).reset_attempts(&oid, Timestamp::now()) {
                Ok(true) => {
                    shared.request_tick();
                    json!({"ok": true, "result": {"object_id": oid_hex(&oid), "attempts": 0}})
                }
                Ok(false) => api_error(libc::ENOENT, "no row for this object in the store"),
                Err(e) => api_error(libc::EIO, &e.to_string()),
            },
            Err(e) => e,
        },
        "" => api_error(libc::EINVAL, "missing \"op\""),
        other => api_error(libc::EOPNOTSUPP, &format!("unknown op '{other}'")),
    }
}

fn status_json(shared: &Shared) -> Value {
    let pools: Vec<Value> = shared
        .pools()
        .iter()
        .map(|p| {
            let r = p.record();
            json!({
                "name": r.name,
                "uuid": p.uuid.to_string(),
                "online": p.online.load(Ordering::SeqCst),
                "ready": p.ready.load(Ordering::SeqCst),
                "spill": p.spill.load(Ordering::Relaxed),
                "tiers": r.tiers.iter().map(|t| json!({
                    "rank": t.rank, "path": t.backing_ref,
                    "target_fill_pct": t.target_fill_pct, "full_threshold_pct": t.full_threshold_pct,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let running: Vec<Value> = shared.queue.running().iter().map(|t| t.to_json()).collect();
    let queued: Vec<Value> = shared
        .queue
        .queued()
        .iter()
        .map(|j| {
            json!({
                "pool_uuid": j.pool_uuid.to_string(),
                "object_id": oid_hex(&j.oid),
                "from_tier": j.from,
                "to_tier": j.to,
                "bytes": j.size_bytes,
                "reason": j.reason,
            })
        })
        .collect();
    json!({
        "pid": std::process::id(),
        "metrics_listen": *lock(&shared.metrics_addr),
        "pools": pools,
        "running": running,
        "queued": queued,
        "counters": shared.counters.to_json(),
        "policy": shared.policy.entries().into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect::<serde_json::Map<String, Value>>(),
    })
}

fn abort_move(shared: &Shared, oid: &[u8; 16]) -> Result<Value, (i32, String)> {
    match shared.queue.cancel(oid, OPERATOR_ABORT_REASON) {
        None => Err((
            libc::ENOENT,
            format!("no move of {} is queued or running", oid_hex(oid)),
        )),
        Some(false) => {
            let retry = Timestamp::now().add_secs(shared.policy.movement_cooldown_seconds);
            let _ = storeext::set_next_attempt(
                &mut lock(&shared.store),
                oid,
                retry,
                OPERATOR_ABORT_REASON,
                Timestamp::now(),
            );
            Ok(json!({"object_id": oid_hex(oid), "result": "unqueued"}))
        }
        Some(true) => {
            let deadline = Instant::now() + ABORT_WAIT;
            while shared.queue.is_busy(oid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let row = lock(&shared.store).object(oid).ok().flatten();
            let state = row.as_ref().map(|r| r.movement_state.as_str());
            let result = if shared.queue.is_busy(oid) {
                "cancelling"
            } else if row
                .as_ref()
                .is_some_and(|r| r.failure_reason == OPERATOR_ABORT_REASON)
            {
                "aborted"
            } else {
                "finished"
            };
            Ok(json!({"object_id": oid_hex(oid), "result": result, "state": state}))
        }
    }
}
