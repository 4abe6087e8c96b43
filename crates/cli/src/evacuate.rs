//! `smoothfs tier evacuate <rank>` (S24): move every regular file off a
//! tier so it can be taken out of `tiers=`, with the control-plane worker
//! library ([`smoothfs_control::worker::run_move`]) run in this process
//! against the pool's control socket (no control plane needed).
//!
//! One run:
//! 1. Recovers what an interrupted run left behind: every move this command
//!    starts is written to `/run/smoothfs/evacuate-<uuid>-tier<rank>.inflight`
//!    before MOVE_PLAN and struck out when the worker returns, so after a
//!    SIGKILL the next run aborts a plan still `plan_accepted` with its seq
//!    (MOVE_ABORT removes the staging file) and finishes a `switched` one
//!    (MOVE_CLEANUP).
//! 2. Lists the tier's regular objects (LIST_OBJECTS TIER_RANK=rank): what
//!    earlier runs moved is simply not listed any more, which is what makes
//!    the job resumable.
//! 3. Refuses up front when the destinations lack room: the sum of the
//!    files' sizes (rounded to 4 KiB) against each destination's free space
//!    less the 64 MiB move reserve, and below `write_staging_full_pct`.
//! 4. Sets the tier's bit in `create_disabled_tier_mask` (SET_TUNABLE) so no
//!    new file lands there; a data plane that answers ENOSYS is reported and
//!    the run goes on (files created meanwhile are picked up by the next pass
//!    or run).
//! 5. Moves the objects, `--jobs` at a time, each to `--to` or to the
//!    nearest tier with room, slower tiers first, then faster (S24.1/4); a
//!    `pin_hot` file only goes to a faster tier and a `pin_cold` one only to
//!    a slower tier (the data plane refuses the other direction). Busy
//!    objects (open passthrough, another move in flight, a lease, staged
//!    writes) are retried in up to `--retries` further passes; pinned ones
//!    (LUN, hard links, a policy pin with no tier in its direction) are
//!    reported blocked with the reason and what to do.
//! 6. Walks the tier (outside `.smoothfs` and `lost+found`): a regular file
//!    the index did not list is resolved through the pool (which indexes
//!    it) and moved; copies that are not the pool's authoritative file are
//!    reported.
//! 7. Exits 0 only when the index lists no object on the tier and the walk
//!    finds no regular file (or symlink) on it.
//!
//! Transaction seqs are the current unix time in microseconds, strictly
//! increasing within the run. SIGINT/SIGTERM cancel the moves in flight (the
//! worker aborts their plans) and end the run with exit 2; a re-run goes on
//! where it stopped.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use smoothfs_control::dataplane;
use smoothfs_control::worker::{
    self, IoPriority, MoveError, MoveOptions, MoveOutcome, NullObserver, Refusal,
};
use smoothfs_uapi::client::Client;
use smoothfs_uapi::error::errno_name;
use smoothfs_uapi::event::ObjectEntry;
use smoothfs_uapi::ids::{Attr, Command, MovementState, ObjectKind, PolicyPin, TierState};
use uuid::Uuid;

use crate::admin::{self, human_bytes};
use crate::ops::{self, Fail, PoolRecord};

/// Where the in-flight journal lives (next to the pool records).
const RUN_DIR: &str = "/run/smoothfs";
/// The worker's `smoothfs_move_reserve_bytes` (S10.2 W6).
const RESERVE_BYTES: u64 = worker::DEFAULT_RESERVE_BYTES;
/// Space is estimated in blocks of this size.
const BLOCK: u64 = 4096;

#[derive(clap::Args)]
pub struct EvacuateArgs {
    /// The tier to empty (rank, 0 = fastest); see `smoothfs tier list`.
    rank: String,
    /// Pool name or UUID (required when several pools are mounted).
    #[arg(long)]
    pool: Option<String>,
    /// Move everything to this tier instead of the nearest one with room.
    #[arg(long = "to", value_name = "RANK")]
    to: Option<String>,
    /// Moves run at the same time (1-16).
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Further passes over files that were busy (open, leased, in another
    /// move) before they are reported blocked.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Break SMB leases (FORCE) instead of waiting for them.
    #[arg(long)]
    force: bool,
    /// Give up the evacuation: abort moves an interrupted run left behind
    /// and clear the tier's create-disabled bit. Moves already done stay.
    #[arg(long)]
    cancel: bool,
    /// Print JSON lines (one per event, then a summary).
    #[arg(long)]
    json: bool,
}

pub fn run(a: EvacuateArgs) -> ExitCode {
    ops::finish(run_evacuate(&a))
}

// ---------------------------------------------------------------------------
// Small pieces
// ---------------------------------------------------------------------------

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(1)
        .max(1)
}

/// Transaction seqs: unix microseconds, strictly increasing in this run.
#[derive(Debug, Default)]
struct Seqs(AtomicU64);

impl Seqs {
    fn next(&self) -> u64 {
        let now = now_us();
        let mut cur = self.0.load(Ordering::SeqCst);
        loop {
            let cand = now.max(cur.saturating_add(1));
            match self
                .0
                .compare_exchange(cur, cand, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return cand,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// Bytes a file of `size` takes, in whole blocks.
fn estimate(size: u64) -> u64 {
    size.div_ceil(BLOCK).saturating_mul(BLOCK)
}

/// What a destination tier can still take: free space less the move
/// reserve, and staying below `full_pct` (the worker's W6 rules).
fn room_of(path: &Path, full_pct: u64) -> i128 {
    match admin::space_of(path) {
        Ok(s) => {
            let by_reserve = i128::from(s.avail) - i128::from(RESERVE_BYTES);
            let by_full = i128::from(s.size) * i128::from(full_pct) / 100 - i128::from(s.used) - 1;
            by_reserve.min(by_full).max(0)
        }
        Err(_) => 0,
    }
}

/// Destination order for an object on `rank` (S24.1/4): nearest slower
/// tier first, then the nearest faster one; a hot pin allows only faster
/// tiers and a cold pin only slower ones.
fn candidates(rank: u8, tier_count: u8, to: Option<u8>, policy: PolicyPin) -> Vec<u8> {
    let base: Vec<u8> = match to {
        Some(t) => vec![t],
        None => (rank.saturating_add(1)..tier_count)
            .chain((0..rank).rev())
            .collect(),
    };
    base.into_iter()
        .filter(|&d| match policy {
            PolicyPin::PinHot => d < rank,
            PolicyPin::PinCold => d > rank,
            PolicyPin::None => true,
        })
        .collect()
}

fn oid_hex(oid: &[u8; 16]) -> String {
    ops::hex(oid)
}

fn parse_oid_hex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    ops::parse_oid(s)
}

/// Block SIGINT and SIGTERM and raise `cancel` when one arrives.
fn cancel_on_signals(cancel: Arc<AtomicBool>) {
    // SAFETY: plain-data signal set, filled and installed before any other
    // thread starts, so every thread inherits the mask and only sigwait
    // sees the signals.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        set
    };
    std::thread::spawn(move || {
        loop {
            let mut sig = 0;
            // SAFETY: `set` is a valid, initialised signal set.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                return;
            }
            if !cancel.swap(true, Ordering::SeqCst) {
                eprintln!(
                    "smoothfs: stopping the evacuation; moves in flight are aborted \
                     (their files stay where they were)"
                );
            }
        }
    });
}

// ---------------------------------------------------------------------------
// In-flight journal
// ---------------------------------------------------------------------------

/// `+ <oid> <seq>` before a move, `- <oid> <seq>` after it; what is not
/// struck out was in flight when the process died.
struct Journal {
    path: PathBuf,
    file: Mutex<Option<File>>,
    open: Mutex<BTreeMap<([u8; 16], u64), ()>>,
}

impl Journal {
    fn path_for(pool: &Uuid, rank: u8) -> PathBuf {
        Path::new(RUN_DIR).join(format!(
            "evacuate-{}-tier{rank}.inflight",
            pool.hyphenated()
        ))
    }

    /// The moves a previous run left open.
    fn leftovers(path: &Path) -> Vec<([u8; 16], u64)> {
        let Ok(f) = File::open(path) else {
            return Vec::new();
        };
        let mut open = BTreeMap::new();
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            let mut it = line.split_whitespace();
            let (Some(op), Some(oid), Some(seq)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let (Some(oid), Ok(seq)) = (parse_oid_hex(oid), seq.parse::<u64>()) else {
                continue;
            };
            match op {
                "+" => {
                    open.insert((oid, seq), ());
                }
                "-" => {
                    open.remove(&(oid, seq));
                }
                _ => {}
            }
        }
        open.into_keys().collect()
    }

    /// A fresh journal (the old one's leftovers must be recovered first).
    fn create(path: PathBuf) -> Journal {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path);
        if let Err(e) = &file {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
        Journal {
            path,
            file: Mutex::new(file.ok()),
            open: Mutex::new(BTreeMap::new()),
        }
    }

    fn write(&self, op: char, oid: &[u8; 16], seq: u64) {
        if let Some(f) = lock(&self.file).as_mut() {
            let _ = writeln!(f, "{op} {} {seq}", oid_hex(oid));
        }
    }

    fn begin(&self, oid: &[u8; 16], seq: u64) {
        lock(&self.open).insert((*oid, seq), ());
        self.write('+', oid, seq);
    }

    fn end(&self, oid: &[u8; 16], seq: u64) {
        lock(&self.open).remove(&(*oid, seq));
        self.write('-', oid, seq);
    }

    /// Remove the file when nothing is left open.
    fn close(self) {
        let empty = lock(&self.open).is_empty();
        drop(lock(&self.file).take());
        if empty {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Undo or finish one move an interrupted run left: `Some(true)` cleaned
/// up, `Some(false)` aborted, `None` nothing to do. A cutover the data
/// plane is still running is waited for (it ends `switched` or `placed`).
fn recover_one(c: &mut Client, pool: &PoolRecord, oid: &[u8; 16], seq: u64) -> Option<bool> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Ok(i) = dataplane::inspect(c, &pool.uuid, oid) {
        if i.transaction_seq != seq {
            return None;
        }
        match i.movement_state {
            MovementState::CutoverInProgress | MovementState::CleanupInProgress
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            MovementState::Switched => {
                return dataplane::move_cleanup(c, &pool.uuid, oid, seq)
                    .is_ok()
                    .then_some(true);
            }
            MovementState::PlanAccepted
            | MovementState::DestinationReserved
            | MovementState::CopyInProgress
            | MovementState::CopyComplete
            | MovementState::CopyVerified => {
                return dataplane::move_abort(
                    c,
                    &pool.uuid,
                    oid,
                    seq,
                    Some("evacuation interrupted"),
                )
                .is_ok()
                .then_some(false);
            }
            _ => return None,
        }
    }
    None
}

/// Recover every leftover: returns (plans aborted, cleanups done).
fn recover(c: &mut Client, pool: &PoolRecord, left: &[([u8; 16], u64)]) -> (u64, u64) {
    let (mut aborted, mut cleaned) = (0, 0);
    for (oid, seq) in left {
        match recover_one(c, pool, oid, *seq) {
            Some(true) => cleaned += 1,
            Some(false) => aborted += 1,
            None => {}
        }
    }
    (aborted, cleaned)
}

// ---------------------------------------------------------------------------
// create_disabled_tier_mask
// ---------------------------------------------------------------------------

/// What became of the tier's create-disabled bit.
enum CreateGate {
    Set,
    AlreadySet,
    Unsupported(String),
    Failed(String),
}

impl CreateGate {
    fn as_str(&self) -> &'static str {
        match self {
            CreateGate::Set => "set",
            CreateGate::AlreadySet => "already_set",
            CreateGate::Unsupported(_) => "unsupported",
            CreateGate::Failed(_) => "failed",
        }
    }
}

fn set_create_mask(c: &mut Client, pool: &PoolRecord, mask: u64) -> smoothfs_uapi::Result<()> {
    let mut req = ops::pool_attrs(pool);
    req.put_str(Attr::Name, "create_disabled_tier_mask")
        .put_str(Attr::Value, &format!("0x{mask:x}"));
    c.request(Command::SetTunable, &req).map(|_| ())
}

fn disable_creates(
    c: &mut Client,
    pool: &PoolRecord,
    status: &dataplane::PoolStatus,
    rank: u8,
) -> CreateGate {
    let bit = 1u64 << rank.min(63);
    let cur = admin::item_mask(status, "create_disabled_tier_mask").unwrap_or(0);
    if cur & bit != 0 {
        return CreateGate::AlreadySet;
    }
    match set_create_mask(c, pool, cur | bit) {
        Ok(()) => CreateGate::Set,
        Err(e) if e.errno() == libc::ENOSYS => CreateGate::Unsupported(e.to_string()),
        Err(e) => CreateGate::Failed(e.to_string()),
    }
}

// ---------------------------------------------------------------------------
// Moving
// ---------------------------------------------------------------------------

/// One object to move.
#[derive(Clone, Debug)]
struct Job {
    oid: [u8; 16],
    rel: PathBuf,
    size: u64,
    policy: PolicyPin,
}

impl From<&ObjectEntry> for Job {
    fn from(o: &ObjectEntry) -> Job {
        Job {
            oid: o.oid,
            rel: o.rel_path.clone(),
            size: o.size_bytes,
            policy: o.policy_pin,
        }
    }
}

/// How one attempt ended.
enum Outcome {
    Moved {
        to: u8,
        bytes: u64,
    },
    /// Deleted, or moved by someone else meanwhile.
    Gone,
    /// Busy: tried again in the next pass.
    Deferred {
        reason: String,
        hint: String,
    },
    /// Will not move in this run.
    Blocked {
        reason: String,
        hint: String,
    },
    Cancelled,
    /// The run cannot go on (pool gone, quiesced).
    Fatal(Fail),
}

struct Ctx<'a> {
    pool: &'a PoolRecord,
    rank: u8,
    tier_count: u8,
    to: Option<u8>,
    force: bool,
    jobs: usize,
    cancel: Arc<AtomicBool>,
    stop: AtomicBool,
    seqs: Seqs,
    journal: Journal,
    queue: Mutex<VecDeque<Job>>,
    /// Room left per rank; `None` = not a destination.
    room: Mutex<Vec<Option<i128>>>,
}

impl Ctx<'_> {
    fn halted(&self) -> bool {
        self.cancel.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst)
    }

    /// Take `est` bytes of room on `d`; false when it has not enough.
    fn reserve(&self, d: u8, est: u64) -> Option<bool> {
        let mut room = lock(&self.room);
        let slot = room.get_mut(usize::from(d))?;
        let r = (*slot)?;
        if r >= i128::from(est) {
            *slot = Some(r - i128::from(est));
            Some(true)
        } else {
            Some(false)
        }
    }

    fn release(&self, d: u8, est: u64) {
        if let Some(Some(r)) = lock(&self.room).get_mut(usize::from(d)) {
            *r += i128::from(est);
        }
    }

    fn set_room(&self, d: u8, v: Option<i128>) {
        if let Some(slot) = lock(&self.room).get_mut(usize::from(d)) {
            *slot = v;
        }
    }

    fn options(&self, seq: u64) -> MoveOptions {
        let mut o = MoveOptions::new(seq);
        o.force = self.force;
        o.copy.cancel = Some(Arc::clone(&self.cancel));
        o
    }
}

/// Try the object's destinations in order until one takes it.
fn move_one(ctx: &Ctx<'_>, c: &mut Client, job: &Job) -> Outcome {
    let cands = candidates(ctx.rank, ctx.tier_count, ctx.to, job.policy);
    if cands.is_empty() {
        let dir = if job.policy == PolicyPin::PinHot {
            "faster"
        } else {
            "slower"
        };
        return Outcome::Blocked {
            reason: format!("{}: no {dir} tier to move it to", job.policy.as_str()),
            hint: "`smoothfs pin set PATH none`, then re-run the evacuation".into(),
        };
    }
    let est = estimate(job.size);
    let mut full = Vec::new();
    let mut lacking: Option<Refusal> = None;
    for d in cands {
        match ctx.reserve(d, est) {
            None => continue,
            Some(false) => {
                full.push(d);
                continue;
            }
            Some(true) => {}
        }
        let seq = ctx.seqs.next();
        ctx.journal.begin(&job.oid, seq);
        let res = worker::run_move(
            c,
            &ctx.pool.uuid,
            &job.oid,
            d,
            &ctx.options(seq),
            &mut NullObserver,
        );
        let keep_open = matches!(&res, Err(e) if e.is_after_switch()
            || matches!(e, MoveError::Control { .. }));
        if !keep_open {
            ctx.journal.end(&job.oid, seq);
        }
        match res {
            Ok(MoveOutcome::Moved(r)) => {
                return Outcome::Moved {
                    to: r.to_tier,
                    bytes: r.copy.bytes_total,
                };
            }
            Ok(MoveOutcome::Refused(r)) => {
                ctx.release(d, est);
                match r {
                    Refusal::AlreadyOnDestination { .. } => return Outcome::Gone,
                    Refusal::Inspect { errno, .. } if errno == libc::ENOENT => {
                        return Outcome::Gone;
                    }
                    Refusal::MissingCapability { .. } => {
                        lacking = Some(r);
                        continue;
                    }
                    Refusal::NotPlaced(_)
                    | Refusal::LeasePinned
                    | Refusal::RangeStaged
                    | Refusal::PassthroughHandles { .. }
                    | Refusal::CutoverBusy { .. }
                    | Refusal::Inspect { .. } => {
                        return Outcome::Deferred {
                            reason: r.to_string(),
                            hint: r.hint(),
                        };
                    }
                    other => {
                        return Outcome::Blocked {
                            reason: other.to_string(),
                            hint: other.hint(),
                        };
                    }
                }
            }
            Err(e) => {
                ctx.release(d, est);
                if e.is_after_switch() {
                    return Outcome::Deferred {
                        reason: e.reason(),
                        hint: e.hint(),
                    };
                }
                match &e {
                    MoveError::Control { .. } => {
                        return Outcome::Fatal(Fail::op(
                            e.errno(),
                            format!(
                                "{}\nsmoothfs: the pool stopped answering; check `smoothfs \
                                 status`, then re-run the evacuation",
                                e.reason()
                            ),
                        ));
                    }
                    MoveError::Copy(smoothfs_control::copy::CopyError::Cancelled) => {
                        return Outcome::Cancelled;
                    }
                    MoveError::NoSpace(_) => {
                        ctx.set_room(d, Some(0));
                        full.push(d);
                        continue;
                    }
                    MoveError::Plan(pe) => match pe.errno() {
                        libc::ENOSPC => {
                            ctx.set_room(d, Some(0));
                            full.push(d);
                            continue;
                        }
                        libc::EIO => {
                            ctx.set_room(d, None);
                            continue;
                        }
                        libc::EAGAIN => {
                            return Outcome::Fatal(Fail::op(
                                libc::EAGAIN,
                                "the pool is quiesced: no move can be planned\nsmoothfs: run \
                                 `smoothfs reconcile`, then re-run the evacuation",
                            ));
                        }
                        libc::ENOENT | libc::EALREADY => return Outcome::Gone,
                        _ => {
                            return Outcome::Deferred {
                                reason: e.reason(),
                                hint: e.hint(),
                            };
                        }
                    },
                    _ => {
                        return Outcome::Deferred {
                            reason: format!(
                                "move failed: {}: {}",
                                errno_name(e.errno()),
                                e.reason()
                            ),
                            hint: e.hint(),
                        };
                    }
                }
            }
        }
    }
    if let (true, Some(r)) = (full.is_empty(), &lacking) {
        Outcome::Blocked {
            reason: r.to_string(),
            hint: r.hint(),
        }
    } else if full.is_empty() {
        Outcome::Deferred {
            reason: "no destination tier is available (faulted or lacking a capability)".into(),
            hint: "see `smoothfs tier list`".into(),
        }
    } else {
        Outcome::Deferred {
            reason: format!(
                "no room on tier(s) {}",
                full.iter()
                    .map(u8::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            hint: "free space on the other tiers, then re-run the evacuation".into(),
        }
    }
}

fn worker_thread(ctx: &Ctx<'_>, tx: &mpsc::Sender<(Job, Outcome)>) {
    if let Err(e) = worker::set_thread_io_priority(IoPriority::DEFAULT) {
        tracing::debug!("cannot set I/O priority: {e}");
    }
    let mut client = match ops::connect(ctx.pool) {
        Ok(c) => c,
        Err(f) => {
            ctx.stop.store(true, Ordering::SeqCst);
            let job = Job {
                oid: [0; 16],
                rel: PathBuf::new(),
                size: 0,
                policy: PolicyPin::None,
            };
            let _ = tx.send((job, Outcome::Fatal(f)));
            return;
        }
    };
    loop {
        if ctx.halted() {
            return;
        }
        let Some(job) = lock(&ctx.queue).pop_front() else {
            return;
        };
        let outcome = move_one(ctx, &mut client, &job);
        if matches!(outcome, Outcome::Fatal(_)) {
            ctx.stop.store(true, Ordering::SeqCst);
        }
        if tx.send((job, outcome)).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// A reported object that did not move.
#[derive(Clone, Debug)]
struct Stuck {
    rel: PathBuf,
    reason: String,
    hint: String,
}

struct Out {
    json: bool,
    bar: Option<ProgressBar>,
    last_plain: Instant,
}

impl Out {
    fn new(json: bool) -> Out {
        let bar = (!json && std::io::stdout().is_terminal()).then(|| {
            let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} files  {msg}",
            ) {
                pb.set_style(style.progress_chars("=> "));
            }
            pb.enable_steady_tick(Duration::from_millis(200));
            pb
        });
        Out {
            json,
            bar,
            last_plain: Instant::now(),
        }
    }

    fn text(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => {
                let _ = ops::write_out(&format!("{s}\n"));
            }
        }
    }

    fn event(&self, event: &str, fields: Value) {
        let mut m = serde_json::Map::new();
        m.insert("ts".into(), json!(ops::rfc3339_ms(SystemTime::now())));
        m.insert("event".into(), json!(event));
        if let Value::Object(f) = fields {
            m.extend(f);
        }
        let mut s = serde_json::to_string(&Value::Object(m)).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        let _ = ops::write_out(&s);
    }

    fn progress(&mut self, t: &Tally) {
        let msg = format!(
            "{} / {} moved{}",
            human_bytes(t.bytes_moved),
            human_bytes(t.bytes_total),
            if t.deferred.is_empty() && t.blocked.is_empty() {
                String::new()
            } else {
                format!(", {} waiting", t.deferred.len() + t.blocked.len())
            }
        );
        if let Some(b) = &self.bar {
            b.set_length(t.total);
            b.set_position(t.moved);
            b.set_message(msg);
        } else if !self.json && self.last_plain.elapsed() >= Duration::from_secs(5) {
            self.last_plain = Instant::now();
            self.text(&format!("moved {} of {} files ({msg})", t.moved, t.total));
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Counts of the whole run.
#[derive(Default)]
struct Tally {
    /// Objects seen on the tier (moved + still there).
    total: u64,
    bytes_total: u64,
    moved: u64,
    bytes_moved: u64,
    gone: u64,
    /// Not retried in this run.
    blocked: BTreeMap<[u8; 16], Stuck>,
    /// Retried in the next pass.
    deferred: BTreeMap<[u8; 16], Stuck>,
    cancelled: bool,
    fatal: Option<Fail>,
    /// The pool's mountpoint, to name files in hints.
    mountpoint: PathBuf,
}

impl Tally {
    /// The worker's hints say `PATH`; name the file through the mount.
    fn hint(&self, rel: &Path, hint: &str) -> String {
        hint.replace("PATH", &self.mountpoint.join(rel).display().to_string())
    }

    fn record(&mut self, job: Job, outcome: Outcome, out: &mut Out) {
        let outcome = match outcome {
            Outcome::Deferred { reason, hint } => Outcome::Deferred {
                hint: self.hint(&job.rel, &hint),
                reason,
            },
            Outcome::Blocked { reason, hint } => Outcome::Blocked {
                hint: self.hint(&job.rel, &hint),
                reason,
            },
            other => other,
        };
        match outcome {
            Outcome::Moved { to, bytes } => {
                self.moved += 1;
                self.bytes_moved += bytes;
                self.deferred.remove(&job.oid);
                if out.json {
                    out.event(
                        "moved",
                        json!({
                            "rel_path": job.rel, "object_id": oid_hex(&job.oid),
                            "to_tier": to, "bytes": bytes,
                            "done": self.moved, "total": self.total,
                        }),
                    );
                }
            }
            Outcome::Gone => {
                self.gone += 1;
                self.deferred.remove(&job.oid);
            }
            Outcome::Deferred { reason, hint } => {
                if out.json {
                    out.event(
                        "deferred",
                        json!({"rel_path": job.rel, "object_id": oid_hex(&job.oid),
                               "reason": reason, "hint": hint}),
                    );
                }
                self.deferred.insert(
                    job.oid,
                    Stuck {
                        rel: job.rel,
                        reason,
                        hint,
                    },
                );
            }
            Outcome::Blocked { reason, hint } => {
                if out.json {
                    out.event(
                        "blocked",
                        json!({"rel_path": job.rel, "object_id": oid_hex(&job.oid),
                               "reason": reason, "hint": hint}),
                    );
                } else {
                    out.text(&format!("blocked: {}: {reason}", job.rel.display()));
                }
                self.deferred.remove(&job.oid);
                self.blocked.insert(
                    job.oid,
                    Stuck {
                        rel: job.rel,
                        reason,
                        hint,
                    },
                );
            }
            Outcome::Cancelled => self.cancelled = true,
            Outcome::Fatal(f) => {
                if self.fatal.is_none() {
                    self.fatal = Some(f);
                }
            }
        }
        out.progress(self);
    }
}

/// Move `jobs`, `ctx.jobs` at a time, recording every outcome.
fn run_pass(ctx: &Ctx<'_>, jobs: Vec<Job>, tally: &mut Tally, out: &mut Out) {
    let workers = ctx.jobs.min(jobs.len()).max(1);
    *lock(&ctx.queue) = jobs.into();
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let tx = tx.clone();
            s.spawn(move || worker_thread(ctx, &tx));
        }
        drop(tx);
        for (job, outcome) in rx {
            tally.record(job, outcome, out);
        }
    });
    if ctx.cancel.load(Ordering::SeqCst) {
        tally.cancelled = true;
    }
}

// ---------------------------------------------------------------------------
// Walking the tier
// ---------------------------------------------------------------------------

/// Regular files and symlinks under `root`, relative, outside `.smoothfs`
/// and `lost+found` at the root; plus directories that could not be read.
fn walk_tier(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>, Vec<String>) {
    let (mut files, mut links, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                errors.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if rel.as_os_str().is_empty() && (name == ".smoothfs" || name == "lost+found") {
                continue;
            }
            let Ok(ft) = entry.file_type() else { continue };
            let child = rel.join(&name);
            if ft.is_dir() {
                stack.push(child);
            } else if ft.is_file() {
                files.push(child);
            } else if ft.is_symlink() {
                links.push(child);
            }
        }
    }
    files.sort();
    links.sort();
    (files, links, errors)
}

/// Files the walk found that the listing did not: resolve each through the
/// pool (which indexes an unindexed one) and return those that are the
/// pool's object on this tier; report the others.
fn walk_jobs(
    c: &mut Client,
    pool: &PoolRecord,
    rank: u8,
    files: &[PathBuf],
    tally: &mut Tally,
    out: &mut Out,
) -> Vec<Job> {
    let known: std::collections::BTreeSet<PathBuf> = tally
        .blocked
        .values()
        .chain(tally.deferred.values())
        .map(|s| s.rel.clone())
        .collect();
    let mut jobs = Vec::new();
    for rel in files {
        if known.contains(rel) {
            continue;
        }
        let stuck = |reason: String, hint: &str| Stuck {
            rel: rel.clone(),
            reason,
            hint: hint.to_string(),
        };
        let key = |n: u64| {
            let mut k = [0xffu8; 16];
            k[8..].copy_from_slice(&n.to_be_bytes());
            k
        };
        match dataplane::resolve_path(c, &pool.uuid, rel) {
            Ok(r) if r.current_tier == rank && r.kind == ObjectKind::Regular => {
                match dataplane::inspect(c, &pool.uuid, &r.oid) {
                    Ok(i) => jobs.push(Job {
                        oid: r.oid,
                        rel: rel.clone(),
                        size: i.size_bytes,
                        policy: i.policy_pin,
                    }),
                    Err(e) => {
                        let s = stuck(format!("INSPECT failed: {e}"), "re-run the evacuation");
                        tally.deferred.insert(r.oid, s);
                    }
                }
            }
            Ok(r)
                if r.current_tier != rank
                    && dataplane::inspect(c, &pool.uuid, &r.oid).is_ok_and(|i| {
                        // The old source of a switched move whose cleanup
                        // is pending: cleaning up is the move's next step
                        // and is idempotent.
                        i.movement_state == MovementState::Switched
                            && dataplane::move_cleanup(c, &pool.uuid, &r.oid, i.transaction_seq)
                                .is_ok_and(|x| x.cleanup_errno == 0)
                    }) => {}
            Ok(r) => {
                let s = stuck(
                    format!(
                        "a copy that is not the pool's file (that one is on tier {})",
                        r.current_tier
                    ),
                    "`smoothfs scrub start` removes same-content stale copies and \
                     quarantines the others",
                );
                let k = key(tally.blocked.len() as u64);
                out_blocked(out, &s);
                tally.blocked.insert(k, s);
            }
            Err(e) => {
                let s = stuck(
                    format!(
                        "not visible in the pool ({}): shadowed by a faster tier's entry or \
                         orphaned",
                        errno_name(e.errno())
                    ),
                    "`smoothfs scrub start` indexes or quarantines it; or remove it from the \
                     tier by hand",
                );
                let k = key(tally.blocked.len() as u64);
                out_blocked(out, &s);
                tally.blocked.insert(k, s);
            }
        }
    }
    jobs
}

fn out_blocked(out: &Out, s: &Stuck) {
    if out.json {
        out.event(
            "blocked",
            json!({"rel_path": s.rel, "reason": s.reason, "hint": s.hint}),
        );
    } else {
        out.text(&format!("blocked: {}: {}", s.rel.display(), s.reason));
    }
}

// ---------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------

fn list_tier(c: &mut Client, pool: &PoolRecord, rank: u8) -> Result<Vec<ObjectEntry>, Fail> {
    Ok(admin::list_objects(c, pool, Some(rank), usize::MAX)?.0)
}

fn run_cancel(
    c: &mut Client,
    pool: &PoolRecord,
    status: &dataplane::PoolStatus,
    rank: u8,
    json: bool,
) -> Result<(), Fail> {
    let jpath = Journal::path_for(&pool.uuid, rank);
    let (aborted, cleaned) = recover(c, pool, &Journal::leftovers(&jpath));
    let _ = std::fs::remove_file(&jpath);
    let bit = 1u64 << rank.min(63);
    let cur = admin::item_mask(status, "create_disabled_tier_mask");
    let gate = match cur {
        Some(m) if m & bit != 0 => match set_create_mask(c, pool, m & !bit) {
            Ok(()) => "cleared".to_string(),
            Err(e) => {
                return Err(admin::fail_hint(
                    e,
                    format!(
                        "clear it by hand: `smoothfs tunable set create_disabled_tier_mask 0x{:x}`",
                        m & !bit
                    ),
                ));
            }
        },
        Some(_) => "not_set".to_string(),
        None => "unsupported".to_string(),
    };
    let v = json!({
        "event": "cancelled", "pool": pool.name, "tier_rank": rank,
        "plans_aborted": aborted, "cleanups_done": cleaned, "create_disabled": gate,
    });
    if json {
        return ops::write_out(&format!("{v}\n"));
    }
    ops::write_out(&format!(
        "evacuation of tier {rank} cancelled: {aborted} leftover plan(s) aborted, {cleaned} \
         cleanup(s) finished, create-disabled bit {}; files already moved stay where they are\n",
        gate.replace('_', " ")
    ))
}

fn run_evacuate(a: &EvacuateArgs) -> Result<(), Fail> {
    if !(1..=16).contains(&a.jobs) {
        return Err(Fail::usage(format!("--jobs {} is not in 1-16", a.jobs)));
    }
    let pool = ops::select_pool(a.pool.as_deref())?;
    let mut c = admin::connect(&pool)?;
    let status = admin::pool_status(&mut c, &pool)?;
    let rank = admin::parse_rank(&a.rank, &status, &pool)?;
    if a.cancel {
        return run_cancel(&mut c, &pool, &status, rank, a.json);
    }
    let tier_count = u8::try_from(status.tiers.len()).unwrap_or(u8::MAX);
    let tier = status
        .tier(rank)
        .cloned()
        .ok_or_else(|| Fail::usage("no such tier"))?;
    let to = match &a.to {
        Some(t) => {
            let d = admin::parse_rank(t, &status, &pool)?;
            if d == rank {
                return Err(Fail::usage(format!(
                    "--to {d} is the tier being evacuated; choose another tier"
                )));
            }
            Some(d)
        }
        None => None,
    };
    if tier_count < 2 {
        return Err(Fail::op(
            libc::EINVAL,
            format!(
                "pool '{}' has only one tier: there is nowhere to move its files",
                pool.name
            ),
        ));
    }
    if tier.state != TierState::Ok {
        return Err(Fail::op(
            libc::EIO,
            format!(
                "tier {rank} ({}) is {}: its files cannot be read\nsmoothfs: `smoothfs tier \
                 resume {rank}` first, then re-run the evacuation",
                tier.tier_path.display(),
                tier.state.as_str()
            ),
        ));
    }
    if status.item("quiesced").is_some_and(|q| q.trim() == "1") {
        return Err(Fail::op(
            libc::EAGAIN,
            "the pool is quiesced: no move can be planned\nsmoothfs: run `smoothfs reconcile`, \
             then re-run the evacuation",
        ));
    }
    let full = admin::full_pct(&status);
    let mut room: Vec<Option<i128>> = vec![None; usize::from(tier_count)];
    for t in &status.tiers {
        if t.rank != rank && t.state == TierState::Ok && to.is_none_or(|d| d == t.rank) {
            room[usize::from(t.rank)] = Some(room_of(&t.tier_path, full));
        }
    }
    if room.iter().all(Option::is_none) {
        return Err(Fail::op(
            libc::EIO,
            "no other tier is ok to receive files\nsmoothfs: see `smoothfs tier list`; resume \
             the faulted tiers first",
        ));
    }

    let cancel = Arc::new(AtomicBool::new(false));
    cancel_on_signals(Arc::clone(&cancel));
    let mut out = Out::new(a.json);

    // 1. What an interrupted run left.
    let jpath = Journal::path_for(&pool.uuid, rank);
    let left = Journal::leftovers(&jpath);
    if !left.is_empty() {
        let (aborted, cleaned) = recover(&mut c, &pool, &left);
        if a.json {
            out.event(
                "recovered",
                json!({"plans_aborted": aborted, "cleanups_done": cleaned}),
            );
        } else {
            out.text(&format!(
                "resuming an interrupted evacuation: {aborted} leftover plan(s) aborted, \
                 {cleaned} cleanup(s) finished"
            ));
        }
    }
    let journal = Journal::create(jpath);

    // 2./3. List and check room.
    let first = list_tier(&mut c, &pool, rank)?;
    let movable: Vec<&ObjectEntry> = first
        .iter()
        .filter(|o| !candidates(rank, tier_count, to, o.policy_pin).is_empty())
        .collect();
    let need: u128 = movable
        .iter()
        .map(|o| u128::from(estimate(o.size_bytes)))
        .sum();
    let have: u128 = room
        .iter()
        .flatten()
        .map(|r| u128::try_from(*r).unwrap_or(0))
        .sum();
    let dests: Vec<u8> = room
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_some())
        .map(|(i, _)| u8::try_from(i).unwrap_or(u8::MAX))
        .collect();
    if need > have {
        journal.close();
        let short = need - have;
        let list = dests
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if a.json {
            out.event(
                "refused",
                json!({
                    "reason": "insufficient capacity", "tier_rank": rank,
                    "objects": movable.len(), "bytes_needed": need as u64,
                    "bytes_available": have as u64, "destinations": dests,
                }),
            );
        }
        out.finish();
        return Err(Fail::op(
            libc::ENOSPC,
            format!(
                "insufficient capacity: tier {rank} holds {} in {} file(s), but tier(s) {list} \
                 have room for only {} (free space less the {} move reserve, below {full}% \
                 full)\nsmoothfs: free at least {} on tier(s) {list} (or add a tier), then \
                 re-run; nothing was moved",
                human_bytes(u64::try_from(need).unwrap_or(u64::MAX)),
                movable.len(),
                human_bytes(u64::try_from(have).unwrap_or(u64::MAX)),
                human_bytes(RESERVE_BYTES),
                human_bytes(u64::try_from(short).unwrap_or(u64::MAX)),
            ),
        ));
    }

    // 4. No new files on the tier.
    let gate = disable_creates(&mut c, &pool, &status, rank);
    let total_bytes: u64 = first.iter().map(|o| o.size_bytes).sum();
    if a.json {
        let mut v = json!({
            "pool": pool.name, "tier_rank": rank, "tier_path": tier.tier_path,
            "objects": first.len(), "bytes": total_bytes, "destinations": dests,
            "create_disabled": gate.as_str(), "jobs": a.jobs,
        });
        if let CreateGate::Unsupported(m) | CreateGate::Failed(m) = &gate {
            v["create_disabled_error"] = json!(m);
        }
        out.event("start", v);
    } else {
        out.text(&format!(
            "evacuating tier {rank} ({}) of pool '{}': {} file(s), {} to tier(s) {}",
            tier.tier_path.display(),
            pool.name,
            first.len(),
            human_bytes(total_bytes),
            dests
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        match &gate {
            CreateGate::Set | CreateGate::AlreadySet => {
                out.text(&format!("new files no longer land on tier {rank}"));
            }
            CreateGate::Unsupported(_) => out.text(&format!(
                "note: this data plane cannot disable creates on a tier \
                 (create_disabled_tier_mask: ENOSYS); files created on tier {rank} meanwhile \
                 are picked up by the next pass or a re-run"
            )),
            CreateGate::Failed(m) => out.text(&format!(
                "note: could not disable creates on tier {rank} ({m}); continuing"
            )),
        }
    }

    // 5. Passes.
    let ctx = Ctx {
        pool: &pool,
        rank,
        tier_count,
        to,
        force: a.force,
        jobs: a.jobs,
        cancel: Arc::clone(&cancel),
        stop: AtomicBool::new(false),
        seqs: Seqs::default(),
        journal,
        queue: Mutex::new(VecDeque::new()),
        room: Mutex::new(room),
    };
    let started = Instant::now();
    let mut tally = Tally {
        total: first.len() as u64,
        bytes_total: total_bytes,
        mountpoint: pool.mountpoint.clone(),
        ..Tally::default()
    };
    let mut listing = Some(first);
    for pass in 0..=a.retries {
        if pass > 0 {
            let until = Instant::now() + Duration::from_secs(u64::from(pass.min(5)));
            while Instant::now() < until && !ctx.halted() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if ctx.halted() {
            break;
        }
        let objs = match listing.take() {
            Some(l) => l,
            None => list_tier(&mut c, &pool, rank)?,
        };
        let jobs: Vec<Job> = objs
            .iter()
            .filter(|o| !tally.blocked.contains_key(&o.oid))
            .map(Job::from)
            .collect();
        // Files that appeared since the first listing count too.
        let seen = tally.moved + jobs.len() as u64 + tally.blocked.len() as u64;
        if seen > tally.total {
            tally.total = seen;
        }
        if jobs.is_empty() {
            tally.deferred.clear();
            break;
        }
        run_pass(&ctx, jobs, &mut tally, &mut out);
        if tally.cancelled || tally.fatal.is_some() || tally.deferred.is_empty() {
            break;
        }
    }

    // 6. Walk the tier for files the index did not list.
    let mut walk_errors = Vec::new();
    if !ctx.halted() && tally.fatal.is_none() {
        let (files, _, _) = walk_tier(&tier.tier_path);
        let jobs = walk_jobs(&mut c, &pool, rank, &files, &mut tally, &mut out);
        if !jobs.is_empty() {
            tally.total += jobs.len() as u64;
            run_pass(&ctx, jobs, &mut tally, &mut out);
        }
    }
    let Ctx { journal, .. } = ctx;
    journal.close();
    out.finish();

    // 7. What is left.
    let remaining = if tally.fatal.is_none() {
        list_tier(&mut c, &pool, rank).map(|l| l.len()).ok()
    } else {
        None
    };
    let (files, links, errs) = walk_tier(&tier.tier_path);
    walk_errors.extend(errs);
    for l in &links {
        tally.blocked.insert(
            {
                let mut k = [0xfeu8; 16];
                k[8..].copy_from_slice(&(tally.blocked.len() as u64).to_be_bytes());
                k
            },
            Stuck {
                rel: l.clone(),
                reason: "symlink: the worker moves regular files only".into(),
                hint: "recreate it through the mount (ln -sfn) once creates avoid this tier".into(),
            },
        );
    }
    let complete = !tally.cancelled
        && tally.fatal.is_none()
        && remaining == Some(0)
        && files.is_empty()
        && links.is_empty()
        && walk_errors.is_empty();
    let mut pruned = None;
    if complete && rank > 0 {
        let mut req = ops::pool_attrs(&pool);
        req.put_u32(Attr::TierMask, 1u32 << rank.min(31));
        if let Ok(r) = c.request(Command::PruneDirs, &req) {
            pruned = smoothfs_uapi::event::decode_list(
                &r.attrs(),
                Attr::StatusItems,
                smoothfs_uapi::event::StatusItem::decode,
            )
            .ok()
            .and_then(|items| {
                items
                    .into_iter()
                    .find(|i| i.name == "dirs_removed")
                    .and_then(|i| i.value.parse::<u64>().ok())
            });
        }
    }
    let mut stuck: Vec<Stuck> = tally
        .blocked
        .values()
        .chain(tally.deferred.values())
        .cloned()
        .collect();
    stuck.sort_by(|x, y| x.rel.cmp(&y.rel));
    let result = if complete {
        "complete"
    } else if tally.cancelled {
        "interrupted"
    } else {
        "incomplete"
    };
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        out.event(
            "summary",
            json!({
                "result": result, "pool": pool.name, "tier_rank": rank,
                "tier_path": tier.tier_path,
                "objects_moved": tally.moved, "bytes_moved": tally.bytes_moved,
                "objects_gone": tally.gone,
                "remaining_objects": remaining, "remaining_regular_files": files.len(),
                "remaining_symlinks": links.len(),
                "blocked": stuck.iter().map(|s| json!({
                    "rel_path": s.rel, "reason": s.reason, "hint": s.hint,
                })).collect::<Vec<_>>(),
                "walk_errors": walk_errors,
                "create_disabled": gate.as_str(),
                "dirs_removed": pruned,
                "seconds": (secs * 1000.0).round() / 1000.0,
            }),
        );
    } else {
        let mut s = format!(
            "moved {} file(s), {} in {secs:.1} s; {} file(s) remain on tier {rank}\n",
            tally.moved,
            human_bytes(tally.bytes_moved),
            files.len() + links.len()
        );
        for st in &stuck {
            s.push_str(&format!(
                "  {}: {}\n    -> {}\n",
                st.rel.display(),
                st.reason,
                st.hint
            ));
        }
        for e in &walk_errors {
            s.push_str(&format!("  cannot read {e}\n"));
        }
        if complete {
            s.push_str(&format!(
                "tier {rank} ({}) holds no files any more: it can be taken out of tiers= \
                 at the next mount{}\n",
                tier.tier_path.display(),
                match gate {
                    CreateGate::Set | CreateGate::AlreadySet => format!(
                        "; it stays create-disabled until then (`smoothfs tier evacuate \
                         {rank} --cancel` to undo)"
                    ),
                    _ => String::new(),
                }
            ));
        }
        out.text(s.trim_end());
    }
    if let Some(f) = tally.fatal {
        return Err(f);
    }
    match result {
        "complete" => Ok(()),
        "interrupted" => Err(Fail::op(
            libc::EINTR,
            format!(
                "evacuation interrupted after moving {} file(s); {} remain on tier {rank}\n\
                 smoothfs: re-run `smoothfs tier evacuate {rank}` to continue",
                tally.moved,
                remaining.unwrap_or(files.len())
            ),
        )),
        _ => Err(Fail::op(
            libc::EBUSY,
            format!(
                "tier {rank} still holds {} file(s) ({} blocked)\nsmoothfs: resolve the reasons \
                 listed above, then re-run `smoothfs tier evacuate {rank}`",
                files.len() + links.len(),
                stuck.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_nearest_slower_first() {
        assert_eq!(candidates(1, 4, None, PolicyPin::None), vec![2, 3, 0]);
        assert_eq!(candidates(0, 3, None, PolicyPin::None), vec![1, 2]);
        assert_eq!(candidates(2, 3, None, PolicyPin::None), vec![1, 0]);
        assert_eq!(candidates(1, 3, Some(0), PolicyPin::None), vec![0]);
        // Pins allow only their own direction.
        assert_eq!(candidates(1, 3, None, PolicyPin::PinHot), vec![0]);
        assert_eq!(candidates(1, 3, None, PolicyPin::PinCold), vec![2]);
        assert!(candidates(0, 2, None, PolicyPin::PinHot).is_empty());
        assert!(candidates(1, 2, None, PolicyPin::PinCold).is_empty());
    }

    #[test]
    fn seqs_strictly_increase() {
        let s = Seqs::default();
        let mut last = 0;
        for _ in 0..10_000 {
            let n = s.next();
            assert!(n > last);
            last = n;
        }
        assert!(last >= now_us() - 60_000_000);
    }

    #[test]
    fn estimates_round_to_blocks() {
        assert_eq!(estimate(0), 0);
        assert_eq!(estimate(1), 4096);
        assert_eq!(estimate(4096), 4096);
        assert_eq!(estimate(4097), 8192);
    }

    #[test]
    fn journal_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let a = [0xaa; 16];
        let b = [0xbb; 16];
        std::fs::write(
            &p,
            format!(
                "+ {} 5\n+ {} 6\n- {} 5\ngarbage\n+ {} 7\n",
                oid_hex(&a),
                oid_hex(&b),
                oid_hex(&a),
                oid_hex(&a)
            ),
        )
        .unwrap();
        assert_eq!(Journal::leftovers(&p), vec![(a, 7), (b, 6)]);
        let j = Journal::create(p.clone());
        j.begin(&a, 9);
        j.end(&a, 9);
        j.close();
        assert!(!p.exists(), "an empty journal is removed");
    }
}
