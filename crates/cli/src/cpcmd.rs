//! The control-plane commands (S26.6):
//!
//! - `smoothfs controlplane [--db PATH] [--policy KEY=VALUE]...
//!   [--socket-dir DIR | --socket PATH...] [--api-socket PATH]`: the
//!   per-host daemon in the foreground, for every pool whose socket is in
//!   DIR (default `/run/smoothfs`), or only the listed sockets.
//! - `smoothfs up --pool NAME --tiers A:B[:C] --mountpoint DIR [--uuid U]
//!   [--policy KEY=VALUE]... [-o MOUNT_OPTIONS]`: mounts the pool (a
//!   `smoothfs mount -f` child in its own process group) and runs its
//!   control plane in this process, store at `<tier 0>/.smoothfs/control.db`.
//!   SIGINT/SIGTERM stop the control plane, unmount DIR and wait for the
//!   child.
//! - `smoothfs plan --dry-run [--pool P] [--path PATH | --oid OID] [--all]
//!   [--json] [--db PATH]` (S22.6): the planner's decision per object,
//!   without emitting anything.
//! - `smoothfs move status [--json]`, `smoothfs move abort <path|oid>`,
//!   `smoothfs move retry <path|oid>`: ask the running control plane(s)
//!   over their API sockets (`/run/smoothfs/controlplane*.sock`, or
//!   `--api-socket`); see [`smoothfs_control::daemon`] for the protocol.
//!
//! Exit status: 0 success, 1 usage error, 2 operation failed (S26.6/2).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use smoothfs_control::config::parse_policy_arg;
use smoothfs_control::daemon::{
    self, ControlPlane, DEFAULT_API_SOCKET, DEFAULT_SOCKET_DIR, DaemonOptions, PoolSource,
    TierFlags,
};
use smoothfs_control::dataplane;
use smoothfs_control::planner::{self, Decision, GateDirection, PlanInput, Verdict};
use smoothfs_control::store::{self, PoolRecord, Store, Timestamp, oid_hex, parse_oid};
use smoothfs_uapi::client::Client;
use smoothfs_uapi::ids::{MovementState, TierState};
use uuid::Uuid;

use crate::ops::{self, Fail};

/// The mount type of a live pool.
const FSTYPE: &str = "fuse.smoothfs";
/// How long `up` waits for the mount to go live.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `up` waits for the data plane to exit after the unmount.
const CHILD_EXIT_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

#[derive(clap::Args)]
pub struct ControlplaneArgs {
    /// The SQLite store.
    #[arg(long, default_value = store::DEFAULT_PATH)]
    db: PathBuf,
    /// Set a policy value (S29.2), stored in control_plane_config; the
    /// `smoothfs_` prefix may be omitted. Repeatable.
    #[arg(long = "policy", value_name = "KEY=VALUE")]
    policy: Vec<String>,
    /// Directory scanned for pool sockets (`*.sock`).
    #[arg(long, default_value = DEFAULT_SOCKET_DIR)]
    socket_dir: PathBuf,
    /// Only these pool sockets (repeatable); overrides --socket-dir.
    #[arg(long = "socket", value_name = "PATH")]
    sockets: Vec<PathBuf>,
    /// The control API socket (S26.6/3).
    #[arg(long, default_value = DEFAULT_API_SOCKET)]
    api_socket: PathBuf,
    /// Verbose logging.
    #[arg(short = 'v', long)]
    verbose: bool,
}

#[derive(clap::Args)]
pub struct UpArgs {
    /// Pool name.
    #[arg(long)]
    pool: String,
    /// Tier directories, fastest first, separated by ':'.
    #[arg(long)]
    tiers: String,
    /// Where to mount the pool.
    #[arg(long)]
    mountpoint: PathBuf,
    /// Pool UUID (default: from the tier markers, else a new one).
    #[arg(long)]
    uuid: Option<String>,
    /// Set a policy value (S29.2); repeatable.
    #[arg(long = "policy", value_name = "KEY=VALUE")]
    policy: Vec<String>,
    /// Extra mount options appended to pool=,uuid=,tiers= (e.g.
    /// heat_interval_ms=1000).
    #[arg(short = 'o', long = "mount-options", value_name = "OPTS")]
    mount_options: Option<String>,
    /// The store (default `<tier 0>/.smoothfs/control.db`).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Verbose logging.
    #[arg(short = 'v', long)]
    verbose: bool,
}

#[derive(clap::Args)]
pub struct PlanArgs {
    /// Required: only dry runs exist (the control plane plans by itself).
    #[arg(long)]
    dry_run: bool,
    /// Pool name or UUID (needed when the store knows several pools).
    #[arg(long)]
    pool: Option<String>,
    /// Only this file (a path inside a mounted pool).
    #[arg(long, conflicts_with = "oid")]
    path: Option<PathBuf>,
    /// Only this object (32 hex digits).
    #[arg(long)]
    oid: Option<String>,
    /// Also objects that stay where they are.
    #[arg(long)]
    all: bool,
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
    /// The store (default /var/lib/smoothfs/smoothfs.db, else the
    /// control.db of a pool started with `smoothfs up`).
    #[arg(long)]
    db: Option<PathBuf>,
}

/// `smoothfs move status|abort|retry`.
#[derive(Parser)]
#[command(name = "smoothfs move")]
struct MoveCtl {
    #[command(subcommand)]
    cmd: MoveCtlCmd,
}

#[derive(clap::Subcommand)]
enum MoveCtlCmd {
    /// Running and queued moves of the control plane(s).
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        api_socket: Option<PathBuf>,
    },
    /// Cancel a running or queued move (S9.6/2).
    Abort {
        /// A path inside a mounted pool, or an object id.
        target: String,
        #[arg(long)]
        pool: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        api_socket: Option<PathBuf>,
    },
    /// Reset a failed object's attempts so it is planned again (S9.5/2).
    Retry {
        target: String,
        #[arg(long)]
        pool: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        api_socket: Option<PathBuf>,
    },
}

// ---------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------

/// Block SIGINT and SIGTERM in every thread started after this call and
/// report them on the returned channel (from a sigwait thread).
fn signal_channel() -> mpsc::Receiver<i32> {
    let (tx, rx) = mpsc::channel();
    // SAFETY: sigset_t is plain data; the calls only read and write the
    // set we own, and the mask is set before other threads start.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        loop {
            let mut sig = 0;
            // SAFETY: `set` is a valid, initialised signal set.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                return;
            }
            if tx.send(sig).is_err() {
                return;
            }
        }
    });
    rx
}

fn parse_policies(args: &[String]) -> Result<Vec<(String, String)>, Fail> {
    args.iter()
        .map(|a| parse_policy_arg(a).map_err(|e| Fail::usage(e.to_string())))
        .collect()
}

// ---------------------------------------------------------------------------
// controlplane
// ---------------------------------------------------------------------------

pub fn controlplane(a: ControlplaneArgs) -> ExitCode {
    crate::init_logging(a.verbose);
    ops::finish(run_controlplane(&a))
}

fn run_controlplane(a: &ControlplaneArgs) -> Result<(), Fail> {
    let overrides = parse_policies(&a.policy)?;
    let signals = signal_channel();
    let mut opts = DaemonOptions::new(&a.db);
    opts.policy_overrides = overrides;
    opts.api_socket = Some(a.api_socket.clone());
    opts.pools = if a.sockets.is_empty() {
        PoolSource::SocketDir(a.socket_dir.clone())
    } else {
        PoolSource::Sockets(a.sockets.clone())
    };
    let cp = ControlPlane::start(opts).map_err(|e| Fail::op(libc::EIO, e))?;
    let sig = signals.recv().unwrap_or(libc::SIGTERM);
    tracing::info!("signal {sig}: stopping");
    cp.stop();
    Ok(())
}

// ---------------------------------------------------------------------------
// up
// ---------------------------------------------------------------------------

/// Mount points of `/proc/self/mountinfo` equal to `path`, with types.
fn mount_types_at(path: &Path) -> Vec<String> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        if left.len() < 5 {
            continue;
        }
        let mp = left[4]
            .replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\");
        if Path::new(&mp) == path
            && let Some(t) = right.split(' ').next()
        {
            out.push(t.to_string());
        }
    }
    out
}

/// The pool UUID stored in any tier's marker.
fn uuid_from_markers(tiers: &[PathBuf]) -> Result<Option<Uuid>, Fail> {
    let mut found: Option<(Uuid, &Path)> = None;
    for t in tiers {
        match smoothfs_fs::marker::read_marker(t) {
            Ok(Some(m)) => match found {
                Some((u, other)) if u != m.pool_uuid => {
                    return Err(Fail::usage(format!(
                        "tier {} belongs to pool {} but tier {} to pool {u}",
                        t.display(),
                        m.pool_uuid,
                        other.display()
                    )));
                }
                Some(_) => {}
                None => found = Some((m.pool_uuid, t)),
            },
            Ok(None) => {}
            Err(e) => return Err(Fail::op(libc::EIO, e)),
        }
    }
    Ok(found.map(|(u, _)| u))
}

/// The pool socket named by the pool record, else the default path.
fn pool_socket(uuid: &Uuid) -> PathBuf {
    let record = Path::new(DEFAULT_SOCKET_DIR).join(format!("{uuid}.json"));
    std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("socket").and_then(Value::as_str).map(PathBuf::from))
        .unwrap_or_else(|| smoothfs_uapi::client::default_socket_path(uuid))
}

pub fn up(a: UpArgs) -> ExitCode {
    crate::init_logging(a.verbose);
    ops::finish(run_up(&a))
}

fn run_up(a: &UpArgs) -> Result<(), Fail> {
    let overrides = parse_policies(&a.policy)?;
    let tiers: Vec<PathBuf> = a
        .tiers
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    if tiers.is_empty() {
        return Err(Fail::usage("--tiers needs at least one directory (A:B)"));
    }
    for t in &tiers {
        if !t.is_dir() {
            return Err(Fail::usage(format!(
                "tier {} is not a directory",
                t.display()
            )));
        }
    }
    if !a.mountpoint.exists() {
        std::fs::create_dir_all(&a.mountpoint).map_err(|e| {
            Fail::op(
                e.raw_os_error().unwrap_or(libc::EIO),
                format!("creating {}: {e}", a.mountpoint.display()),
            )
        })?;
    }
    let mnt = std::fs::canonicalize(&a.mountpoint)
        .map_err(|e| Fail::op(libc::ENOENT, format!("{}: {e}", a.mountpoint.display())))?;
    let existing = mount_types_at(&mnt);
    if !existing.is_empty() {
        return Err(Fail::op(
            libc::EBUSY,
            format!(
                "{} is already a mount point ({}); unmount it first or choose another directory",
                mnt.display(),
                existing.join(", ")
            ),
        ));
    }
    let (uuid, uuid_origin) = match &a.uuid {
        Some(u) => (
            Uuid::parse_str(u).map_err(|_| Fail::usage(format!("invalid --uuid '{u}'")))?,
            "given",
        ),
        None => match uuid_from_markers(&tiers)? {
            Some(u) => (u, "read from the tier markers"),
            None => (Uuid::new_v4(), "new; stored in the tier markers"),
        },
    };
    let tier_list = tiers
        .iter()
        .map(|t| t.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let mut mount_opts = format!("pool={},uuid={uuid},tiers={tier_list}", a.pool);
    if let Some(extra) = a.mount_options.as_deref().filter(|s| !s.is_empty()) {
        mount_opts.push(',');
        mount_opts.push_str(extra);
    }
    let db =
        a.db.clone()
            .unwrap_or_else(|| tiers[0].join(".smoothfs").join("control.db"));

    // The data plane: a child in its own process group (a terminal's
    // Ctrl-C reaches only us; we stop the control plane first).
    let exe = std::env::current_exe()
        .map_err(|e| Fail::op(libc::EIO, format!("cannot find own executable: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.args(["mount", "-f", "-o", &mount_opts, "none"])
        .arg(&mnt)
        .stdin(Stdio::null());
    if a.verbose {
        cmd.arg("-v");
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    let signals = signal_channel();
    let mut child = cmd
        .spawn()
        .map_err(|e| Fail::op(libc::EIO, format!("cannot start the data plane: {e}")))?;
    wait_mounted(&mut child, &mnt, &signals)?;
    println!(
        "smoothfs up: pool '{}' ({uuid}, {uuid_origin}) mounted at {} over {} tier(s): {}",
        a.pool,
        mnt.display(),
        tiers.len(),
        tier_list
    );

    let api = PathBuf::from(DEFAULT_SOCKET_DIR).join(format!("controlplane-{uuid}.sock"));
    let mut opts = DaemonOptions::new(&db);
    opts.policy_overrides = overrides;
    opts.pools = PoolSource::Sockets(vec![pool_socket(&uuid)]);
    opts.api_socket = Some(api.clone());
    let cp = match ControlPlane::start(opts) {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("smoothfs: control plane failed to start: {e}; unmounting");
            stop_data_plane(&mut child, &mnt);
            return Err(Fail::op(libc::EIO, e));
        }
    };
    let p = cp.policy();
    println!(
        "smoothfs up: control plane running (store {}, planner every {} s, {} worker(s))",
        db.display(),
        p.planner_interval_seconds,
        p.worker_count
    );
    println!(
        "next: put files in {m}; then try `smoothfs status --pool {n}`, \
         `smoothfs plan --dry-run --db {d}`, `smoothfs move status`, \
         `smoothfs events --pool {n}`; Ctrl-C stops the control plane and unmounts",
        m = mnt.display(),
        n = a.pool,
        d = db.display()
    );
    let _ = std::io::stdout().flush();

    let result = loop {
        match signals.recv_timeout(Duration::from_millis(200)) {
            Ok(sig) => {
                println!("smoothfs up: signal {sig}: stopping the control plane, then unmounting");
                break Ok(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(Fail::op(
                libc::EIO,
                format!("the data plane exited ({status}); stopping the control plane"),
            ));
        }
    };
    cp.stop();
    drop(cp);
    stop_data_plane(&mut child, &mnt);
    if result.is_ok() {
        println!("smoothfs up: stopped; {} unmounted", mnt.display());
    }
    result
}

fn wait_mounted(child: &mut Child, mnt: &Path, signals: &mpsc::Receiver<i32>) -> Result<(), Fail> {
    let deadline = Instant::now() + MOUNT_TIMEOUT;
    loop {
        if mount_types_at(mnt).iter().any(|t| t == FSTYPE) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Fail::op(
                libc::EIO,
                format!("the data plane exited ({status}) before the mount was live; see above"),
            ));
        }
        if let Ok(sig) = signals.try_recv() {
            stop_data_plane(child, mnt);
            return Err(Fail::op(
                libc::EINTR,
                format!("signal {sig} while mounting; nothing is mounted"),
            ));
        }
        if Instant::now() >= deadline {
            stop_data_plane(child, mnt);
            return Err(Fail::op(
                libc::ETIMEDOUT,
                format!(
                    "the mount at {} did not go live within {MOUNT_TIMEOUT:?}",
                    mnt.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Unmount (plain, then lazy) and wait for the data plane to exit.
fn stop_data_plane(child: &mut Child, mnt: &Path) {
    let mut unmounted = false;
    for _ in 0..20 {
        if mount_types_at(mnt).is_empty() {
            unmounted = true;
            break;
        }
        if Command::new("umount")
            .arg(mnt)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            unmounted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if !unmounted {
        eprintln!("smoothfs: {} is busy; detaching it lazily", mnt.display());
        let _ = Command::new("umount").arg("-l").arg(mnt).status();
    }
    let deadline = Instant::now() + CHILD_EXIT_TIMEOUT;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("smoothfs: the data plane did not exit; killing it");
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// plan --dry-run
// ---------------------------------------------------------------------------

/// Pool records (`/run/smoothfs/*.json`): (name, uuid, first tier path).
fn pool_record_tiers() -> Vec<(String, Uuid, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(DEFAULT_SOCKET_DIR) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Some(v) = std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        else {
            continue;
        };
        let (Some(name), Some(uuid)) = (
            v.get("pool").and_then(Value::as_str),
            v.get("uuid")
                .and_then(Value::as_str)
                .and_then(|u| Uuid::parse_str(u).ok()),
        ) else {
            continue;
        };
        let tier0 = v
            .pointer("/tiers/0/path")
            .and_then(Value::as_str)
            .map(PathBuf::from);
        if let Some(t) = tier0 {
            out.push((name.to_string(), uuid, t));
        }
    }
    out
}

pub(crate) fn resolve_db(explicit: Option<&Path>, pool: Option<&str>) -> Result<PathBuf, Fail> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let default = PathBuf::from(store::DEFAULT_PATH);
    if default.exists() {
        return Ok(default);
    }
    let by_uuid = pool.and_then(|p| Uuid::parse_str(p).ok());
    let candidates: Vec<PathBuf> = pool_record_tiers()
        .into_iter()
        .filter(|(n, u, _)| pool.is_none_or(|p| n == p || Some(*u) == by_uuid))
        .map(|(_, _, t)| t.join(".smoothfs").join("control.db"))
        .filter(|p| p.exists())
        .collect();
    match candidates.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Fail::op(
            libc::ENOENT,
            format!(
                "no store at {} and no `smoothfs up` pool with one; pass --db",
                default.display()
            ),
        )),
        _ => Err(Fail::usage(
            "several stores found; choose one with --db or --pool",
        )),
    }
}

pub(crate) fn select_store_pool(
    st: &Store,
    sel: Option<&str>,
    uuid_hint: Option<Uuid>,
) -> Result<PoolRecord, Fail> {
    let pools = st.pools().map_err(|e| Fail::op(libc::EIO, e))?;
    if let Some(u) = uuid_hint {
        return pools
            .into_iter()
            .find(|p| p.backend_ref == u.to_string())
            .ok_or_else(|| Fail::op(libc::ENOENT, format!("the store has no pool {u}")));
    }
    match sel {
        Some(s) => pools
            .into_iter()
            .find(|p| p.name == s || p.backend_ref == s || p.namespace_id == s)
            .ok_or_else(|| Fail::op(libc::ENOENT, format!("the store has no pool '{s}'"))),
        None => {
            let n = pools.len();
            match n {
                0 => Err(Fail::op(libc::ENOENT, "the store has no pools yet")),
                1 => Ok(pools.into_iter().next().unwrap_or_else(|| unreachable!())),
                _ => Err(Fail::usage(format!(
                    "the store has {n} pools ({}); choose one with --pool",
                    pools
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
    }
}

pub fn plan(a: PlanArgs) -> ExitCode {
    ops::finish(run_plan(&a))
}

fn run_plan(a: &PlanArgs) -> Result<(), Fail> {
    if !a.dry_run {
        return Err(Fail::usage(
            "only `smoothfs plan --dry-run` exists: the control plane emits plans itself",
        ));
    }
    // --path: the pool and the object come from the mount.
    let mut uuid_hint = None;
    let mut rel_filter: Option<String> = None;
    if let Some(path) = &a.path {
        let (pool, rel) = ops::pool_for_path(path, a.pool.as_deref())?;
        uuid_hint = Some(pool.uuid);
        rel_filter = Some(rel.to_string_lossy().into_owned());
    }
    let oid_filter = match &a.oid {
        Some(s) => Some(parse_oid(s).ok_or_else(|| Fail::usage(format!("invalid --oid '{s}'")))?),
        None => None,
    };
    let db = resolve_db(a.db.as_deref(), a.pool.as_deref())?;
    if !db.exists() {
        return Err(Fail::op(
            libc::ENOENT,
            format!("no store at {}", db.display()),
        ));
    }
    let st = Store::open(&db).map_err(|e| Fail::op(libc::EIO, e))?;
    let record = select_store_pool(&st, a.pool.as_deref(), uuid_hint)?;
    let uuid = Uuid::parse_str(&record.backend_ref).ok();
    let (policy, warnings) = st.load_policy().map_err(|e| Fail::op(libc::EIO, e))?;
    for w in warnings {
        eprintln!("smoothfs: {w}");
    }
    let oid_filter = match (&rel_filter, oid_filter) {
        (Some(rel), _) => {
            let row = st
                .object_by_path(&record.namespace_id, rel)
                .map_err(|e| Fail::op(libc::EIO, e))?;
            match row {
                Some(r) => Some(r.object_id),
                None => {
                    return Err(Fail::op(
                        libc::ENOENT,
                        format!("the store has no row for '{rel}' yet (inventory pending?)"),
                    ));
                }
            }
        }
        (None, o) => o,
    };

    // Tier states from the data plane; unreachable = pool offline.
    let mut flags = vec![TierFlags::default(); record.tiers.len()];
    let mut offline = true;
    if let Some(u) = uuid
        && let Ok(mut c) = Client::connect(pool_socket(&u))
        && let Ok(status) = dataplane::status(&mut c, &u)
    {
        offline = false;
        let active = status
            .item("metadata_active_tier_mask")
            .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok());
        for t in &status.tiers {
            if let Some(f) = flags.get_mut(usize::from(t.rank)) {
                f.faulted = t.state == TierState::Faulted;
                f.down = t.state == TierState::Down;
                f.inactive = active.is_some_and(|m| t.rank < 64 && m & (1 << t.rank) == 0);
            }
        }
    }
    let tiers = daemon::tier_inputs(&record, &flags, &mut Vec::new());
    let now = Timestamp::now();
    let objects = st
        .planning_objects(&record, now, policy.half_life_secs())
        .map_err(|e| Fail::op(libc::EIO, e))?;
    let out = planner::plan(&PlanInput {
        tiers: &tiers,
        objects: &objects,
        config: &policy,
        now,
        evacuation: None,
        pool_offline: offline,
    });
    let shown: Vec<&Decision> = out
        .decisions
        .iter()
        .filter(|d| match oid_filter {
            Some(o) => d.oid == o,
            None => a.all || d.verdict != Verdict::Stay,
        })
        .collect();
    let path_of = |oid: &[u8; 16]| -> String {
        st.object(oid)
            .ok()
            .flatten()
            .map(|r| r.rel_path)
            .unwrap_or_default()
    };
    let rows: Vec<Value> = shown
        .iter()
        .map(|d| decision_json(d, &path_of(&d.oid), &policy))
        .collect();
    if a.json {
        let text = serde_json::to_string_pretty(&Value::Array(rows))
            .map_err(|e| Fail::op(libc::EIO, e))?;
        println!("{text}");
        return Ok(());
    }
    let mut s = String::new();
    s.push_str(&format!(
        "pool {} ({}){}: {} object(s), {} plan(s) this tick\n",
        record.name,
        record.backend_ref,
        if offline { ", OFFLINE" } else { "" },
        objects.len(),
        out.plans.len()
    ));
    for t in &out.tiers {
        s.push_str(&format!(
            "  tier {}: {} object(s), fill {} -> {} (target {}%, full {}%), {:?} pressure, \
             promote gate {:.0}, demote gate {}\n",
            t.rank,
            t.objects,
            pct(t.fill_pct),
            pct(t.projected_fill_pct),
            record.tier(t.rank).map_or(0, |x| x.target_fill_pct),
            record.tier(t.rank).map_or(0, |x| x.full_threshold_pct),
            t.pressure,
            t.promote_gate,
            t.demote_gate.map_or("none".into(), |g| format!("{g:.0}"))
        ));
    }
    if rows.is_empty() {
        s.push_str(if a.all || oid_filter.is_some() {
            "no objects\n"
        } else {
            "nothing would move (use --all to see every object)\n"
        });
    } else {
        s.push_str(&format!(
            "{:<32}  {:<32}  {:>4}  {:>12}  {:<8}  {:>4}  {:<26}  {}\n",
            "PATH", "OID", "TIER", "HEAT", "DECISION", "DEST", "REASON", "NUMBERS"
        ));
        for r in &rows {
            let g = |k: &str| r.get(k).cloned().unwrap_or(Value::Null);
            s.push_str(&format!(
                "{:<32}  {:<32}  {:>4}  {:>12.0}  {:<8}  {:>4}  {:<26}  {}\n",
                g("path").as_str().unwrap_or(""),
                g("object_id").as_str().unwrap_or(""),
                g("tier"),
                g("heat").as_f64().unwrap_or(0.0),
                g("decision").as_str().unwrap_or(""),
                match g("destination") {
                    Value::Null => "-".to_string(),
                    v => v.to_string(),
                },
                g("reason").as_str().unwrap_or(""),
                g("summary").as_str().unwrap_or("")
            ));
        }
    }
    print!("{s}");
    Ok(())
}

fn pct(v: Option<f64>) -> String {
    v.map_or("unmeasured".into(), |p| format!("{p:.1}%"))
}

fn decision_json(
    d: &Decision,
    path: &str,
    policy: &smoothfs_control::config::PolicyConfig,
) -> Value {
    let n = &d.numbers;
    let dest = match d.verdict {
        Verdict::Move { to, .. } => Some(to),
        _ => None,
    };
    let gate = n.gate.map(|g| {
        json!({
            "tier": g.tier,
            "direction": match g.direction { GateDirection::Up => "up", GateDirection::Down => "down" },
            "percentile": g.percentile,
            "quantile": g.quantile,
            "value": g.value,
        })
    });
    let fill = n.fill.map(|f| {
        json!({"tier": f.tier, "fill_pct": f.fill_pct, "target_pct": f.target_pct, "full_pct": f.full_pct})
    });
    let mut summary = Vec::new();
    if let Some(g) = n.gate {
        let cmp = match g.direction {
            GateDirection::Up => ">=",
            GateDirection::Down => "<=",
        };
        summary.push(format!(
            "gate(t{}) {cmp} {} from Q({})={}",
            g.tier,
            g.value.map_or("none".into(), |v| format!("{v:.0}")),
            g.percentile,
            g.quantile.map_or("-".into(), |q| format!("{q:.0}"))
        ));
    }
    if let Some(f) = n.fill {
        summary.push(format!(
            "fill(t{}) {} target {}%",
            f.tier,
            pct(f.fill_pct),
            f.target_pct
        ));
    }
    if let Some(age) = n.age_secs {
        summary.push(format!("age {age:.0}s/{}s", policy.min_residency_seconds));
    }
    if let Some(m) = n.since_move_secs {
        summary.push(format!(
            "since move {m:.0}s/{}s",
            policy.movement_cooldown_seconds
        ));
    }
    if n.attempts > 0 {
        summary.push(format!("attempts {}", n.attempts));
    }
    json!({
        "path": path,
        "object_id": oid_hex(&d.oid),
        "tier": d.tier,
        "heat": d.heat,
        "decision": d.verdict.as_str(),
        "destination": dest,
        "reason": d.reason.as_str(),
        "numbers": {
            "gate": gate,
            "fill": fill,
            "age_secs": n.age_secs,
            "min_residency_secs": policy.min_residency_seconds,
            "since_move_secs": n.since_move_secs,
            "cooldown_secs": policy.movement_cooldown_seconds,
            "attempts": n.attempts,
        },
        "summary": summary.join(", "),
    })
}

// ---------------------------------------------------------------------------
// move status / abort / retry
// ---------------------------------------------------------------------------

/// `smoothfs move status|abort|retry …` (the first argument after `move`
/// names the operation; `smoothfs move PATH --to N` stays the operator
/// move). Returns `None` when the arguments are not one of these.
pub fn intercept_move_control() -> Option<ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    let op = args.get(2).map(String::as_str)?;
    if args.get(1).map(String::as_str) != Some("move")
        || !matches!(op, "status" | "abort" | "retry")
        || args.iter().any(|a| a == "--to" || a.starts_with("--to="))
    {
        return None;
    }
    let ctl = match MoveCtl::try_parse_from(args.iter().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return Some(ExitCode::from(if e.use_stderr() { 1 } else { 0 }));
        }
    };
    Some(ops::finish(run_move_ctl(ctl.cmd)))
}

/// API sockets to ask: the given one, or every control plane's.
fn api_sockets(given: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = given {
        return vec![p.to_path_buf()];
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(DEFAULT_SOCKET_DIR)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("controlplane") && n.ends_with(".sock"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// One request to a control plane's API.
fn api_call(socket: &Path, op: &str, args: Value) -> Result<Value, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut line = json!({"op": op, "args": args}).to_string();
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&reply).map_err(|e| format!("bad reply from {}: {e}", socket.display()))
}

fn target_oid(target: &str, pool: Option<&str>) -> Result<[u8; 16], Fail> {
    if let Some(oid) = parse_oid(target).filter(|_| !Path::new(target).exists()) {
        return Ok(oid);
    }
    let (p, rel) = ops::pool_for_path(Path::new(target), pool)?;
    let mut c = ops::connect(&p)?;
    Ok(dataplane::resolve_path(&mut c, &p.uuid, &rel)?.oid)
}

fn run_move_ctl(cmd: MoveCtlCmd) -> Result<(), Fail> {
    match cmd {
        MoveCtlCmd::Status { json, api_socket } => move_status(json, api_socket.as_deref()),
        MoveCtlCmd::Abort {
            target,
            pool,
            json,
            api_socket,
        } => move_op(
            "move_abort",
            &target,
            pool.as_deref(),
            json,
            api_socket.as_deref(),
        ),
        MoveCtlCmd::Retry {
            target,
            pool,
            json,
            api_socket,
        } => move_op(
            "move_retry",
            &target,
            pool.as_deref(),
            json,
            api_socket.as_deref(),
        ),
    }
}

fn no_daemon() -> Fail {
    Fail::op(
        libc::ECONNREFUSED,
        "no control plane is running (start `smoothfs controlplane` or `smoothfs up`)",
    )
}

fn move_status(as_json: bool, api: Option<&Path>) -> Result<(), Fail> {
    let mut running = Vec::new();
    let mut queued = Vec::new();
    let mut reached = 0;
    for sock in api_sockets(api) {
        let Ok(v) = api_call(&sock, "move_status", json!({})) else {
            continue;
        };
        if v.get("ok") != Some(&Value::Bool(true)) {
            continue;
        }
        reached += 1;
        let r = v.get("result").cloned().unwrap_or(Value::Null);
        if let Some(a) = r.get("running").and_then(Value::as_array) {
            running.extend(a.iter().cloned());
        }
        if let Some(a) = r.get("queued").and_then(Value::as_array) {
            queued.extend(a.iter().cloned());
        }
    }
    if reached == 0 {
        return Err(no_daemon());
    }
    if as_json {
        println!("{}", json!({"running": running, "queued": queued}));
        return Ok(());
    }
    if running.is_empty() {
        println!("no moves running; {} queued", queued.len());
        return Ok(());
    }
    println!(
        "{:<12}  {:<32}  {:<32}  {:<6}  {:<20}  {:>16}  {:>10}",
        "POOL", "PATH", "OID", "TIERS", "STATE", "PROGRESS", "MiB/s"
    );
    for r in &running {
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
        let (done, total) = (n("bytes_done"), n("bytes_total"));
        let pct = if total > 0 {
            done as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        println!(
            "{:<12}  {:<32}  {:<32}  {:<6}  {:<20}  {:>15.1}%  {:>10.1}",
            s("pool"),
            s("path"),
            s("object_id"),
            format!("{}->{}", n("from_tier"), n("to_tier")),
            s("state"),
            pct,
            n("bytes_per_s") as f64 / (1024.0 * 1024.0)
        );
    }
    println!("{} queued", queued.len());
    Ok(())
}

/// MOVE_ABORT of a plan still accepted in the data plane with no worker
/// behind it; the plan's seq, or None when the object has no plan in
/// `plan_accepted` (nothing to abort there).
fn abort_orphan_plan(
    target: &str,
    pool: Option<&str>,
    oid: &[u8; 16],
) -> Result<Option<u64>, Fail> {
    let p = if Path::new(target).exists() || pool.is_none() {
        ops::pool_for_path(Path::new(target), pool)?.0
    } else {
        ops::select_pool(pool)?
    };
    let mut c = ops::connect(&p)?;
    let i = dataplane::inspect(&mut c, &p.uuid, oid)?;
    if i.movement_state != MovementState::PlanAccepted {
        return Ok(None);
    }
    dataplane::move_abort(
        &mut c,
        &p.uuid,
        oid,
        i.transaction_seq,
        Some("aborted by operator (its worker was gone)"),
    )?;
    Ok(Some(i.transaction_seq))
}

fn move_op(
    op: &str,
    target: &str,
    pool: Option<&str>,
    as_json: bool,
    api: Option<&Path>,
) -> Result<(), Fail> {
    let oid = target_oid(target, pool)?;
    let mut last: Option<Value> = None;
    let mut reached = 0;
    let mut unknown = 0;
    for sock in api_sockets(api) {
        let Ok(v) = api_call(&sock, op, json!({"object_id": oid_hex(&oid)})) else {
            continue;
        };
        reached += 1;
        if v.get("ok") == Some(&Value::Bool(true)) {
            let result = v.get("result").cloned().unwrap_or(Value::Null);
            if as_json {
                println!("{result}");
            } else if op == "move_abort" {
                println!(
                    "{target}: {}",
                    result
                        .get("result")
                        .and_then(Value::as_str)
                        .unwrap_or("done")
                );
            } else {
                println!("{target}: attempts reset; it is planned again at the next tick");
            }
            return Ok(());
        }
        if v.get("errno").and_then(Value::as_str) == Some("ENOENT") {
            unknown += 1;
        }
        last = Some(v);
    }
    // No control plane runs this move (none is up, or none has it queued
    // or running): a plan its worker left behind (a `smoothfs move` killed
    // mid-copy) is aborted in the data plane itself (S9.6 item 1).
    if op == "move_abort" && unknown == reached {
        match abort_orphan_plan(target, pool, &oid)? {
            Some(seq) => {
                if as_json {
                    println!(
                        "{}",
                        json!({"object_id": oid_hex(&oid), "result": "aborted in the data plane",
                               "transaction_seq": seq})
                    );
                } else {
                    println!(
                        "{target}: aborted in the data plane (plan {seq} had no running worker); the file stays where it was"
                    );
                }
                return Ok(());
            }
            None if reached == 0 => return Err(no_daemon()),
            None => {}
        }
    }
    if reached == 0 {
        return Err(no_daemon());
    }
    let v = last.unwrap_or(Value::Null);
    let errno = v.get("errno").and_then(Value::as_str).unwrap_or("EIO");
    let msg = v.get("message").and_then(Value::as_str).unwrap_or("failed");
    Err(Fail {
        code: 2,
        msg: format!("{errno}: {msg}"),
    })
}
