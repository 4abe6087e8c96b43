//! Administrative commands that talk to a pool's control socket directly
//! (S26.6/3; no control plane needed):
//!
//! - `smoothfs pin set|get` (S8.6/1): PIN_SET / INSPECT of one path.
//! - `smoothfs quiesce` (S15.1) and `smoothfs reconcile [--reason] [--prune]`
//!   (S15.2, S15.3).
//! - `smoothfs tier list|down|resume` (S23); `tier evacuate` lives in
//!   [`crate::evacuate`].
//! - `smoothfs tunable get|set` (STATUS / SET_TUNABLE, S26.1).
//! - `smoothfs scrub start|stop|status` (S4.6).
//!
//! Every command prints a table (or a few lines) by default and one JSON
//! object with `--json`. Exit status (S26.6/2): 0 success, 1 usage error,
//! 2 operation failed, with `smoothfs: ERRNO: message` and a line saying
//! what to do next on stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::{Map, Value, json};
use smoothfs_control::dataplane::{self, PoolStatus};
use smoothfs_uapi::Error as UapiError;
use smoothfs_uapi::client::Client;
use smoothfs_uapi::error::errno_name;
use smoothfs_uapi::event::{ObjectEntry, StatusItem, decode_list};
use smoothfs_uapi::ids::{Attr, Command, PinState, PolicyPin, TierState};

use crate::ops::{self, Fail, PoolRecord};

/// `write_staging_full_pct` when STATUS does not report it (S29.1).
pub(crate) const DEFAULT_FULL_PCT: u64 = 98;
/// `quiesce_timeout_ms` when STATUS does not report it (S15.1/2).
const DEFAULT_QUIESCE_TIMEOUT_MS: u64 = 60_000;
/// RECONCILE_REASON holds at most this many bytes (S20.6).
const REASON_MAX: usize = 255;
/// `tier list` counts objects with at most this many LIST_OBJECTS entries,
/// so a pool with millions of files still answers quickly.
const OBJECT_COUNT_CAP: usize = 200_000;

/// The RW status items of S26.1 plus the SET_TUNABLE names of docs/uapi.md.
pub(crate) const WRITABLE: &[&str] = &[
    "create_disabled_tier_mask",
    "passthrough_write_off_pct",
    "metadata_active_tier_mask",
    "scrub_rate",
    "mediated_comm",
    "cutover_drain_timeout_ms",
    "cleanup_grace_s",
    "quiesce_timeout_ms",
    "tier_health_interval_ms",
    "heat_interval_ms",
    "write_staging_enabled",
    "write_staging_full_pct",
    "write_staging_drain_active_tier_mask",
];

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// A failed request with a line saying what to do next.
pub(crate) fn fail_hint(e: UapiError, hint: impl std::fmt::Display) -> Fail {
    let f = Fail::from(e);
    Fail {
        code: f.code,
        msg: format!("{}\nsmoothfs: {hint}", f.msg),
    }
}

/// The errno of a failed request.
fn errno_of(e: &UapiError) -> i32 {
    e.errno()
}

pub(crate) fn connect(pool: &PoolRecord) -> Result<Client, Fail> {
    ops::connect(pool).map_err(|f| Fail {
        code: f.code,
        msg: format!(
            "{}\nsmoothfs: cannot reach pool '{}' at {}: is it still mounted? see `smoothfs status`",
            f.msg,
            pool.name,
            pool.socket.display()
        ),
    })
}

pub(crate) fn pool_status(c: &mut Client, pool: &PoolRecord) -> Result<PoolStatus, Fail> {
    dataplane::status(c, &pool.uuid)
        .map_err(|e| fail_hint(e, "the pool did not answer STATUS: see `smoothfs status`"))
}

/// A tier rank as typed by the operator, checked against the pool.
pub(crate) fn parse_rank(s: &str, status: &PoolStatus, pool: &PoolRecord) -> Result<u8, Fail> {
    let n = status.tiers.len();
    let bad = || {
        Fail::usage(format!(
            "invalid tier rank '{s}': pool '{}' has {n} tier(s), ranks 0-{} (0 = fastest); \
             see `smoothfs tier list`",
            pool.name,
            n.saturating_sub(1)
        ))
    };
    let rank: u8 = s.trim().parse().map_err(|_| bad())?;
    if status.tier(rank).is_none() {
        return Err(bad());
    }
    Ok(rank)
}

/// A JSON line or a text block on stdout.
fn emit(json: bool, v: &Value, text: &str) -> Result<(), Fail> {
    if json {
        ops::write_out(&ops::to_json_text(v))
    } else {
        ops::write_out(text)
    }
}

/// `1536` → `1.5 KiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A table with a header row; every column left-aligned and padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count());
                s.push_str(c);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

// ---------------------------------------------------------------------------
// pin set / get (S8.6/1)
// ---------------------------------------------------------------------------

#[derive(Subcommand)]
pub enum PinCmd {
    /// Set the policy pin of a file: hot (never demoted), cold (never
    /// promoted) or none; optionally force mediated opens.
    Set(PinSetArgs),
    /// Show the effective pin, the policy pin and the mediated flag.
    Get(PinGetArgs),
    /// Pin rules by glob, applied by the control plane (S8.6/2-4).
    #[command(subcommand)]
    Rule(crate::pinrule::RuleCmd),
}

#[derive(clap::Args)]
pub struct PinSetArgs {
    /// A file or directory inside a mounted pool.
    path: PathBuf,
    /// hot, cold or none.
    value: String,
    /// Always open the file mediated (no passthrough; S13.1).
    #[arg(long, conflicts_with = "no_mediated")]
    mediated: bool,
    /// Clear the always-mediated flag.
    #[arg(long)]
    no_mediated: bool,
    /// Pool name or UUID (only needed when pools are nested).
    #[arg(long)]
    pool: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct PinGetArgs {
    /// A file or directory inside a mounted pool.
    path: PathBuf,
    /// Pool name or UUID (only needed when pools are nested).
    #[arg(long)]
    pool: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn pin(cmd: PinCmd) -> ExitCode {
    ops::finish(match cmd {
        PinCmd::Set(a) => run_pin_set(&a),
        PinCmd::Get(a) => run_pin_get(&a),
        PinCmd::Rule(c) => crate::pinrule::run(c),
    })
}

/// `hot`/`cold`/`none`, also the store names `pin_hot`/`pin_cold`.
fn parse_policy_pin(s: &str) -> Result<PolicyPin, Fail> {
    match s.trim().to_ascii_lowercase().as_str() {
        "hot" | "pin_hot" => Ok(PolicyPin::PinHot),
        "cold" | "pin_cold" => Ok(PolicyPin::PinCold),
        "none" | "off" => Ok(PolicyPin::None),
        _ => Err(Fail::usage(format!(
            "invalid pin '{s}': expected hot, cold or none"
        ))),
    }
}

/// The pool holding `path` and the OID of the object behind it: the
/// `trusted.smoothfs.oid` xattr read through the mount, else RESOLVE_PATH.
pub(crate) fn resolve_oid(
    path: &Path,
    sel: Option<&str>,
) -> Result<(PoolRecord, PathBuf, [u8; 16], Client), Fail> {
    let (pool, rel) = ops::pool_for_path(path, sel)?;
    if rel.as_os_str().is_empty() {
        return Err(Fail::usage(format!(
            "{} is the root of pool '{}': name a file or directory inside it",
            path.display(),
            pool.name
        )));
    }
    let mut client = connect(&pool)?;
    let mut buf = [0u8; 16];
    let abs = pool.mountpoint.join(&rel);
    let from_xattr = match rustix::fs::lgetxattr(&abs, "trusted.smoothfs.oid", &mut buf[..]) {
        Ok(16) => Some(buf),
        _ => None,
    };
    let oid = match from_xattr {
        Some(oid) => oid,
        None => {
            dataplane::resolve_path(&mut client, &pool.uuid, &rel)
                .map_err(|e| {
                    fail_hint(
                        e,
                        format!("check that {} exists in the pool", path.display()),
                    )
                })?
                .oid
        }
    };
    Ok((pool, rel, oid, client))
}

fn pin_report(
    json: bool,
    path: &Path,
    pool: &PoolRecord,
    rel: &Path,
    oid: &[u8; 16],
    pins: (PinState, PolicyPin, bool),
    note: Option<&str>,
) -> Result<(), Fail> {
    let (effective, policy, mediated) = pins;
    let v = json!({
        "pool": pool.name,
        "path": path,
        "rel_path": rel,
        "object_id": ops::hex(oid),
        "pin_state": effective.as_str(),
        "policy_pin": policy.as_str(),
        "mediated": mediated,
    });
    let mut text = format!(
        "path        {}\nobject_id   {}\npin_state   {}  (effective)\npolicy_pin  {}\nmediated    {}\n",
        path.display(),
        ops::hex(oid),
        effective.as_str(),
        policy.as_str(),
        if mediated { "yes" } else { "no" }
    );
    if let Some(n) = note {
        text.push_str(&format!("note: {n}\n"));
    }
    emit(json, &v, &text)
}

fn run_pin_set(a: &PinSetArgs) -> Result<(), Fail> {
    let policy = parse_policy_pin(&a.value)?;
    let (pool, rel, oid, mut c) = resolve_oid(&a.path, a.pool.as_deref())?;
    let mut req = ops::pool_attrs(&pool);
    req.put_bytes(Attr::ObjectId, &oid)
        .put_u8(Attr::PolicyPin, policy.number());
    if a.mediated || a.no_mediated {
        req.put_bool(Attr::Mediated, a.mediated);
    }
    let reply = c.request(Command::PinSet, &req).map_err(|e| {
        let hint = match errno_of(&e) {
            libc::ENOENT => "the object is gone: check the path".to_string(),
            libc::EROFS => "the pool is mounted read-only".to_string(),
            libc::EPERM => "PIN_SET needs root".to_string(),
            _ => format!("see `smoothfs inspect {}`", a.path.display()),
        };
        fail_hint(e, hint)
    })?;
    let r = reply.attrs();
    let bad = |e: smoothfs_uapi::error::WireError| Fail::op(e.errno, e.message);
    let effective = PinState::from_wire(r.get_u8(Attr::PinState).map_err(bad)?.unwrap_or(0));
    let policy_back = PolicyPin::from_wire(r.get_u8(Attr::PolicyPin).map_err(bad)?.unwrap_or(0));
    let mediated = r.get_bool(Attr::Mediated).map_err(bad)?.unwrap_or(false);
    let note =
        (effective != policy_back.as_pin_state() && policy_back != PolicyPin::None).then(|| {
            format!(
                "the effective pin is {} (a protocol pin or hard links take precedence); \
                 the policy pin applies once it clears",
                effective.as_str()
            )
        });
    pin_report(
        a.json,
        &a.path,
        &pool,
        &rel,
        &oid,
        (effective, policy_back, mediated),
        note.as_deref(),
    )
}

fn run_pin_get(a: &PinGetArgs) -> Result<(), Fail> {
    let (pool, rel, oid, mut c) = resolve_oid(&a.path, a.pool.as_deref())?;
    let mut req = ops::pool_attrs(&pool);
    req.put_bytes(Attr::ObjectId, &oid);
    let reply = c
        .request(Command::Inspect, &req)
        .map_err(|e| fail_hint(e, format!("check that {} exists", a.path.display())))?;
    let attrs = reply.attrs();
    let i = dataplane::Inspection::decode(&attrs).map_err(|e| Fail::op(e.errno, e.message))?;
    let mediated = attrs
        .get_bool(Attr::Mediated)
        .map_err(|e| Fail::op(e.errno, e.message))?
        .unwrap_or(false);
    pin_report(
        a.json,
        &a.path,
        &pool,
        &rel,
        &oid,
        (i.pin_state, i.policy_pin, mediated),
        None,
    )
}

// ---------------------------------------------------------------------------
// quiesce / reconcile (S15)
// ---------------------------------------------------------------------------

#[derive(clap::Args)]
pub struct QuiesceArgs {
    /// Pool name or UUID (required when several pools are mounted).
    #[arg(long)]
    pool: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ReconcileArgs {
    /// Pool name or UUID (required when several pools are mounted).
    #[arg(long)]
    pool: Option<String>,
    /// Why (recorded as last_reconcile_reason; at most 255 bytes).
    #[arg(long)]
    reason: Option<String>,
    /// Also prune empty directory copies on slower tiers (PRUNE_DIRS).
    #[arg(long)]
    prune: bool,
    #[arg(long)]
    json: bool,
}

pub fn quiesce(a: QuiesceArgs) -> ExitCode {
    ops::finish(run_quiesce(&a))
}

pub fn reconcile(a: ReconcileArgs) -> ExitCode {
    ops::finish(run_reconcile(&a))
}

fn item_u64(status: &PoolStatus, name: &str) -> Option<u64> {
    status.item(name)?.trim().parse().ok()
}

fn run_quiesce(a: &QuiesceArgs) -> Result<(), Fail> {
    let pool = ops::select_pool(a.pool.as_deref())?;
    let mut c = connect(&pool)?;
    let status = pool_status(&mut c, &pool)?;
    let timeout_ms = item_u64(&status, "quiesce_timeout_ms").unwrap_or(DEFAULT_QUIESCE_TIMEOUT_MS);
    // The reply waits for running cutovers; never time out before the
    // data plane does.
    c.set_timeout(Duration::from_millis(timeout_ms) + Duration::from_secs(15));
    let in_flight = item_u64(&status, "cutovers_in_flight").unwrap_or(0);
    if !a.json && in_flight > 0 {
        ops::write_out(&format!(
            "waiting for {in_flight} running cutover(s) to finish (at most {} s)...\n",
            timeout_ms.div_ceil(1000)
        ))?;
    }
    let started = Instant::now();
    c.request(Command::Quiesce, &ops::pool_attrs(&pool))
        .map_err(|e| {
            let hint = match errno_of(&e) {
                libc::ETIMEDOUT => format!(
                    "cutovers were still running after quiesce_timeout_ms ({timeout_ms} ms); \
                     the pool stays quiesced (no new moves). Run `smoothfs quiesce` again to \
                     wait longer, or `smoothfs reconcile` to resume moves"
                ),
                _ => "see `smoothfs status`".to_string(),
            };
            fail_hint(e, hint)
        })?;
    let waited = started.elapsed();
    let v = json!({
        "pool": pool.name,
        "quiesced": true,
        "waited_ms": u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
        "cutovers_in_flight_before": in_flight,
    });
    let text = format!(
        "pool '{}' quiesced after {:.1} s: no move is planned or cut over until \
         `smoothfs reconcile`; file I/O goes on as usual\n",
        pool.name,
        waited.as_secs_f64()
    );
    emit(a.json, &v, &text)
}

fn items_json(items: &[StatusItem]) -> Map<String, Value> {
    items
        .iter()
        .map(|i| (i.name.clone(), ops::status_value(&i.name, &i.value)))
        .collect()
}

fn run_reconcile(a: &ReconcileArgs) -> Result<(), Fail> {
    let reason = a.reason.clone().unwrap_or_default();
    if reason.len() > REASON_MAX {
        return Err(Fail::usage(format!(
            "--reason is {} bytes; at most {REASON_MAX} are recorded",
            reason.len()
        )));
    }
    if reason.contains('\0') {
        return Err(Fail::usage("--reason must not contain NUL"));
    }
    let pool = ops::select_pool(a.pool.as_deref())?;
    let mut c = connect(&pool)?;
    let mut req = ops::pool_attrs(&pool);
    if !reason.is_empty() {
        req.put_str(Attr::ReconcileReason, &reason);
    }
    c.request(Command::Reconcile, &req)
        .map_err(|e| fail_hint(e, "see `smoothfs status`"))?;
    let mut prune = None;
    if a.prune {
        let reply = c
            .request(Command::PruneDirs, &ops::pool_attrs(&pool))
            .map_err(|e| {
                fail_hint(
                    e,
                    "the reconcile itself was done; retry `smoothfs reconcile --prune` later",
                )
            })?;
        let items = decode_list(&reply.attrs(), Attr::StatusItems, StatusItem::decode)
            .map_err(|e| Fail::op(e.errno, e.message))?;
        prune = Some(items);
    }
    let status = pool_status(&mut c, &pool)?;
    let at = item_u64(&status, "last_reconcile_at").unwrap_or(0);
    let recorded = status
        .item("last_reconcile_reason")
        .unwrap_or("")
        .to_string();
    let mut v = json!({
        "pool": pool.name,
        "reconciled": true,
        "reason": recorded,
        "last_reconcile_at": at,
        "quiesced": item_u64(&status, "quiesced").map(|q| q != 0),
    });
    let mut text = format!(
        "pool '{}' reconciled{}: moves may be planned again, passthrough re-enabled, heat drained\n",
        pool.name,
        if recorded.is_empty() {
            String::new()
        } else {
            format!(" (reason: {recorded})")
        }
    );
    if let Some(items) = &prune {
        v["prune"] = Value::Object(items_json(items));
        let get = |n: &str| {
            items
                .iter()
                .find(|i| i.name == n)
                .map_or("0", |i| i.value.as_str())
                .to_string()
        };
        text.push_str(&format!(
            "directories pruned: {} removed, {} updated, {} kept\n",
            get("dirs_removed"),
            get("dirs_updated"),
            get("dirs_kept")
        ));
    }
    emit(a.json, &v, &text)
}

// ---------------------------------------------------------------------------
// tier list / down / resume (S23)
// ---------------------------------------------------------------------------

#[derive(Subcommand)]
pub enum TierCmd {
    /// Tiers with state, capabilities, size, fill and objects.
    List(TierListArgs),
    /// Take a tier down before pulling it: its files return EIO (S23).
    Down(TierRankArgs),
    /// Resume a down or faulted tier (checks its identity and health).
    Resume(TierRankArgs),
    /// Move every file off a tier so it can be removed (S24).
    Evacuate(crate::evacuate::EvacuateArgs),
}

#[derive(clap::Args)]
pub struct TierListArgs {
    /// Pool name or UUID (required when several pools are mounted).
    #[arg(long)]
    pool: Option<String>,
    /// Skip counting objects per tier (LIST_OBJECTS).
    #[arg(long)]
    no_objects: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct TierRankArgs {
    /// Tier rank (0 = fastest); see `smoothfs tier list`.
    rank: String,
    /// Pool name or UUID (required when several pools are mounted).
    #[arg(long)]
    pool: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn tier(cmd: TierCmd) -> ExitCode {
    match cmd {
        TierCmd::List(a) => ops::finish(run_tier_list(&a)),
        TierCmd::Down(a) => ops::finish(run_tier_state(&a, true)),
        TierCmd::Resume(a) => ops::finish(run_tier_state(&a, false)),
        TierCmd::Evacuate(a) => crate::evacuate::run(a),
    }
}

/// Size, used and available bytes of a tier root (statvfs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Space {
    pub(crate) size: u64,
    pub(crate) used: u64,
    pub(crate) avail: u64,
    pub(crate) unit: u64,
}

pub(crate) fn space_of(path: &Path) -> std::io::Result<Space> {
    let sv = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    let unit = if sv.f_frsize > 0 {
        sv.f_frsize
    } else {
        sv.f_bsize
    };
    Ok(Space {
        size: sv.f_blocks.saturating_mul(unit),
        used: sv.f_blocks.saturating_sub(sv.f_bavail).saturating_mul(unit),
        avail: sv.f_bavail.saturating_mul(unit),
        unit,
    })
}

/// The near-full threshold in percent (S5.1).
pub(crate) fn full_pct(status: &PoolStatus) -> u64 {
    item_u64(status, "write_staging_full_pct")
        .filter(|p| (1..=100).contains(p))
        .unwrap_or(DEFAULT_FULL_PCT)
}

/// A mask status item (`0x3` or decimal).
pub(crate) fn item_mask(status: &PoolStatus, name: &str) -> Option<u64> {
    let v = status.item(name)?.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Entries asked for per LIST_OBJECTS page at first. The data plane ends a
/// page by its own size estimate, which undercounts an entry's encoded size
/// and can then fail the reply with EMSGSIZE; the page is asked again with
/// half the limit.
const LIST_PAGE: u32 = 512;

/// Every regular object of the pool, in LIST_OBJECTS pages, optionally
/// only those on `rank`; stops after `cap` entries (the bool says whether
/// the listing is complete).
pub(crate) fn list_objects(
    c: &mut Client,
    pool: &PoolRecord,
    rank: Option<u8>,
    cap: usize,
) -> Result<(Vec<ObjectEntry>, bool), Fail> {
    let mut out = Vec::new();
    let mut cursor: Option<Vec<u8>> = None;
    let mut limit = LIST_PAGE;
    loop {
        let mut req = ops::pool_attrs(pool);
        req.put_u32(Attr::Limit, limit).put_u8(Attr::ObjectKind, 1);
        if let Some(r) = rank {
            req.put_u8(Attr::TierRank, r);
        }
        if let Some(cur) = &cursor {
            req.put_bytes(Attr::Cursor, cur);
        }
        let reply = match c.request(Command::ListObjects, &req) {
            Ok(r) => r,
            Err(e) if e.errno() == libc::EMSGSIZE && limit > 1 => {
                limit /= 2;
                continue;
            }
            Err(e) => {
                return Err(fail_hint(
                    e,
                    "the pool did not answer LIST_OBJECTS: see `smoothfs status`",
                ));
            }
        };
        let attrs = reply.attrs();
        let page = decode_list(&attrs, Attr::Objects, ObjectEntry::decode)
            .map_err(|e| Fail::op(e.errno, e.message))?;
        out.extend(page);
        cursor = attrs.get_bytes(Attr::Cursor).map(<[u8]>::to_vec);
        if cursor.is_none() {
            return Ok((out, true));
        }
        if out.len() >= cap {
            return Ok((out, false));
        }
    }
}

fn run_tier_list(a: &TierListArgs) -> Result<(), Fail> {
    let pool = ops::select_pool(a.pool.as_deref())?;
    let mut c = connect(&pool)?;
    let status = pool_status(&mut c, &pool)?;
    let full = full_pct(&status);
    let create_disabled = item_mask(&status, "create_disabled_tier_mask");
    let metadata_active = item_mask(&status, "metadata_active_tier_mask");
    let counts = if a.no_objects {
        None
    } else {
        let (objs, complete) = list_objects(&mut c, &pool, None, OBJECT_COUNT_CAP)?;
        let mut per: Vec<(u64, u64)> = vec![(0, 0); status.tiers.len()];
        for o in &objs {
            if let Some(slot) = per.get_mut(usize::from(o.current_tier)) {
                slot.0 += 1;
                slot.1 += o.size_bytes;
            }
        }
        Some((per, complete))
    };
    let mut rows_json = Vec::new();
    let mut rows = Vec::new();
    let mut caps_lines = String::new();
    for t in &status.tiers {
        let space = space_of(&t.tier_path);
        let bit = 1u64 << u32::from(t.rank).min(63);
        let mut j = json!({
            "tier_rank": t.rank,
            "tier_path": t.tier_path,
            "tier_id": t.tier_id,
            "tier_state": t.state.as_str(),
            "tier_caps": t.caps.bits(),
            "tier_cap_names": t.caps.names(),
            "passthrough": t.passthrough,
            "full_pct": full,
            "create_disabled": create_disabled.map(|m| m & bit != 0),
            "metadata_active": metadata_active.map(|m| m & bit != 0),
        });
        let (size, used, fill) = match &space {
            Ok(s) => {
                let fill = if s.size == 0 {
                    0.0
                } else {
                    s.used as f64 * 100.0 / s.size as f64
                };
                j["size_bytes"] = json!(s.size);
                j["used_bytes"] = json!(s.used);
                j["avail_bytes"] = json!(s.avail);
                j["fill_pct"] = json!((fill * 100.0).round() / 100.0);
                j["near_full"] = json!(fill >= full as f64);
                (
                    human_bytes(s.size),
                    human_bytes(s.used),
                    format!("{fill:.1}%"),
                )
            }
            Err(e) => {
                j["statvfs_error"] = json!(format!(
                    "{}: {e}",
                    errno_name(e.raw_os_error().unwrap_or(libc::EIO))
                ));
                ("-".into(), "-".into(), "-".into())
            }
        };
        let (objects, obytes) = match &counts {
            Some((per, complete)) => {
                let (n, b) = per.get(usize::from(t.rank)).copied().unwrap_or((0, 0));
                j["objects"] = json!(n);
                j["object_bytes"] = json!(b);
                j["objects_exact"] = json!(complete);
                let ge = if *complete { "" } else { ">=" };
                (format!("{ge}{n}"), human_bytes(b))
            }
            None => ("-".into(), "-".into()),
        };
        let mut flags = Vec::new();
        if create_disabled.is_some_and(|m| m & bit != 0) {
            flags.push("no-create");
        }
        if metadata_active.is_some_and(|m| m & bit == 0) {
            flags.push("standby");
        }
        rows.push(vec![
            t.rank.to_string(),
            t.state.as_str().to_string(),
            if t.passthrough { "yes" } else { "no" }.to_string(),
            size,
            used,
            fill,
            format!("{full}%"),
            objects,
            obytes,
            if flags.is_empty() {
                "-".to_string()
            } else {
                flags.join(",")
            },
            t.tier_path.display().to_string(),
        ]);
        caps_lines.push_str(&format!(
            "tier {} caps (0x{:04x}): {}\n",
            t.rank,
            t.caps.bits(),
            t.caps.names().join(" ")
        ));
        rows_json.push(j);
    }
    let v = json!({"pool": pool.name, "pool_uuid": pool.uuid.to_string(), "tiers": rows_json});
    let text = format!(
        "pool '{}' ({})\n\n{}\n{}",
        pool.name,
        pool.uuid,
        table(
            &[
                "RANK",
                "STATE",
                "PASSTHROUGH",
                "SIZE",
                "USED",
                "FILL",
                "FULL_AT",
                "OBJECTS",
                "OBJ_BYTES",
                "FLAGS",
                "PATH"
            ],
            &rows
        ),
        caps_lines
    );
    emit(a.json, &v, &text)
}

fn run_tier_state(a: &TierRankArgs, down: bool) -> Result<(), Fail> {
    let pool = ops::select_pool(a.pool.as_deref())?;
    let mut c = connect(&pool)?;
    let status = pool_status(&mut c, &pool)?;
    let rank = parse_rank(&a.rank, &status, &pool)?;
    let path = status
        .tier(rank)
        .map(|t| t.tier_path.clone())
        .unwrap_or_default();
    let mut req = ops::pool_attrs(&pool);
    req.put_u8(Attr::TierRank, rank);
    let cmd = if down {
        Command::TierDown
    } else {
        Command::TierResume
    };
    let reply = c.request(cmd, &req).map_err(|e| {
        let hint = match (down, errno_of(&e)) {
            (false, libc::EINVAL) => format!(
                "the filesystem at {} is not this pool's tier {rank} (its marker does not \
                 match): mount the right filesystem there and retry",
                path.display()
            ),
            (false, libc::EIO) => format!(
                "tier {rank} ({}) still fails its health check: check the device \
                 (dmesg, mount) and retry",
                path.display()
            ),
            _ => "see `smoothfs tier list`".to_string(),
        };
        fail_hint(e, hint)
    })?;
    let state = TierState::from_wire(
        reply
            .attrs()
            .get_u8(Attr::TierState)
            .map_err(|e| Fail::op(e.errno, e.message))?
            .unwrap_or(if down { 2 } else { 0 }),
    );
    let v = json!({
        "pool": pool.name,
        "tier_rank": rank,
        "tier_path": path,
        "tier_state": state.as_str(),
    });
    let text = if down {
        format!(
            "tier {rank} ({}) is {}: its files return EIO and new files go elsewhere until \
             `smoothfs tier resume {rank}`\n",
            path.display(),
            state.as_str()
        )
    } else {
        format!(
            "tier {rank} ({}) is {}: its files are served again; a scrub of it is scheduled\n",
            path.display(),
            state.as_str()
        )
    };
    emit(a.json, &v, &text)
}

// ---------------------------------------------------------------------------
// tunable get / set
// ---------------------------------------------------------------------------

#[derive(Subcommand)]
pub enum TunableCmd {
    /// Show the pool's tunables (or any one status item by NAME).
    Get(TunableGetArgs),
    /// Set a tunable (SET_TUNABLE) and print the value read back.
    Set(TunableSetArgs),
}

#[derive(clap::Args)]
pub struct TunableGetArgs {
    /// A tunable or status item name; all tunables when omitted.
    name: Option<String>,
    /// List every status item, not only the writable ones.
    #[arg(long)]
    all: bool,
    /// Pool name or UUID (required when several pools are mounted).
    #[arg(long)]
    pool: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct TunableSetArgs {
    name: String,
    value: String,
    /// Pool name or UUID (required when several pools are mounted).
    #[arg(long)]
    pool: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn tunable(cmd: TunableCmd) -> ExitCode {
    ops::finish(match cmd {
        TunableCmd::Get(a) => run_tunable_get(&a),
        TunableCmd::Set(a) => run_tunable_set(&a),
    })
}

fn tunable_json(name: &str, value: &str) -> Value {
    json!({
        "name": name,
        "value": ops::status_value(name, value),
        "writable": WRITABLE.contains(&name),
    })
}

/// STATUS items plus the scrub's own items STATUS does not carry
/// (`scrub_rate`), so every tunable SET_TUNABLE knows can be read back.
fn tunable_items(c: &mut Client, pool: &PoolRecord) -> Result<PoolStatus, Fail> {
    let mut status = pool_status(c, pool)?;
    let mut req = ops::pool_attrs(pool);
    req.put_str(Attr::Name, "status");
    if let Ok(reply) = c.request(Command::Scrub, &req)
        && let Ok(items) = decode_list(&reply.attrs(), Attr::StatusItems, StatusItem::decode)
    {
        for i in items {
            if status.item(&i.name).is_none() {
                status.items.push(i);
            }
        }
    }
    Ok(status)
}

fn run_tunable_get(a: &TunableGetArgs) -> Result<(), Fail> {
    let pool = ops::select_pool(a.pool.as_deref())?;
    let mut c = connect(&pool)?;
    let status = tunable_items(&mut c, &pool)?;
    if let Some(name) = &a.name {
        let Some(value) = status.item(name) else {
            return Err(Fail::usage(format!(
                "pool '{}' has no tunable or status item '{name}'; \
                 `smoothfs tunable get --all` lists them",
                pool.name
            )));
        };
        let mut v = tunable_json(name, value);
        v["pool"] = json!(pool.name);
        return emit(a.json, &v, &format!("{name} = {value}\n"));
    }
    let items: Vec<&StatusItem> = status
        .items
        .iter()
        .filter(|i| a.all || WRITABLE.contains(&i.name.as_str()))
        .collect();
    let v = json!({
        "pool": pool.name,
        "tunables": items.iter().map(|i| tunable_json(&i.name, &i.value)).collect::<Vec<_>>(),
    });
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                if i.value.is_empty() {
                    "\"\"".into()
                } else {
                    i.value.clone()
                },
                if WRITABLE.contains(&i.name.as_str()) {
                    "rw"
                } else {
                    "ro"
                }
                .into(),
            ]
        })
        .collect();
    emit(a.json, &v, &table(&["NAME", "VALUE", "ACCESS"], &rows))
}

fn run_tunable_set(a: &TunableSetArgs) -> Result<(), Fail> {
    if a.name.len() > 64 || a.value.len() > 255 {
        return Err(Fail::usage(
            "a tunable name holds at most 64 bytes and a value at most 255",
        ));
    }
    let pool = ops::select_pool(a.pool.as_deref())?;
    let mut c = connect(&pool)?;
    let mut req = ops::pool_attrs(&pool);
    req.put_str(Attr::Name, &a.name)
        .put_str(Attr::Value, &a.value);
    let reply = c.request(Command::SetTunable, &req).map_err(|e| {
        let hint = match errno_of(&e) {
            libc::ENOSYS => format!(
                "this data plane does not implement '{}' yet; nothing was changed",
                a.name
            ),
            libc::EPERM => format!(
                "'{}' is a read-only status item; `smoothfs tunable get` lists the writable ones",
                a.name
            ),
            libc::EINVAL => format!(
                "check the name and the value's range; `smoothfs tunable get` lists the tunables \
                 and docs/runbook.md their ranges (value given: '{}')",
                a.value
            ),
            _ => "see `smoothfs status`".to_string(),
        };
        fail_hint(e, hint)
    })?;
    let r = reply.attrs();
    let back = r
        .get_str(Attr::Value)
        .ok()
        .flatten()
        .unwrap_or(&a.value)
        .to_string();
    let mut v = tunable_json(&a.name, &back);
    v["pool"] = json!(pool.name);
    v["requested"] = json!(a.value);
    emit(a.json, &v, &format!("{} = {back}\n", a.name))
}

// ---------------------------------------------------------------------------
// scrub start / stop / status (S4.6)
// ---------------------------------------------------------------------------

#[derive(Subcommand)]
pub enum ScrubCmd {
    /// Start (or restart) a scrub of every metadata-active tier.
    Start(ScrubArgs),
    /// Stop a running scrub (its cursor is kept; `start` resumes).
    Stop(ScrubArgs),
    /// Show the scrub's state and progress.
    Status(ScrubArgs),
}

#[derive(clap::Args)]
pub struct ScrubArgs {
    /// Pool name or UUID (required when several pools are mounted).
    #[arg(long)]
    pool: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn scrub(cmd: ScrubCmd) -> ExitCode {
    let (action, a) = match cmd {
        ScrubCmd::Start(a) => ("start", a),
        ScrubCmd::Stop(a) => ("stop", a),
        ScrubCmd::Status(a) => ("status", a),
    };
    ops::finish(run_scrub(action, &a))
}

fn run_scrub(action: &str, a: &ScrubArgs) -> Result<(), Fail> {
    let pool = ops::select_pool(a.pool.as_deref())?;
    let mut c = connect(&pool)?;
    let mut req = ops::pool_attrs(&pool);
    req.put_str(Attr::Name, action);
    let reply = c.request(Command::Scrub, &req).map_err(|e| {
        let hint = match errno_of(&e) {
            libc::EROFS => "the pool is mounted read-only; a scrub needs it writable".into(),
            libc::ENOSYS => "this data plane has no scrub".to_string(),
            _ => "see `smoothfs status`".to_string(),
        };
        fail_hint(e, hint)
    })?;
    let items = decode_list(&reply.attrs(), Attr::StatusItems, StatusItem::decode)
        .map_err(|e| Fail::op(e.errno, e.message))?;
    let mut m = items_json(&items);
    m.insert("pool".into(), json!(pool.name));
    m.insert("action".into(), json!(action));
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| vec![i.name.clone(), i.value.clone()])
        .collect();
    let head = match action {
        "start" => format!("scrub started on pool '{}'\n\n", pool.name),
        "stop" => format!("scrub stopped on pool '{}'\n\n", pool.name),
        _ => format!("scrub of pool '{}'\n\n", pool.name),
    };
    emit(
        a.json,
        &Value::Object(m),
        &format!("{head}{}", table(&["NAME", "VALUE"], &rows)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse() {
        assert_eq!(parse_policy_pin("hot").ok(), Some(PolicyPin::PinHot));
        assert_eq!(parse_policy_pin("COLD").ok(), Some(PolicyPin::PinCold));
        assert_eq!(parse_policy_pin("pin_hot").ok(), Some(PolicyPin::PinHot));
        assert_eq!(parse_policy_pin("none").ok(), Some(PolicyPin::None));
        assert_eq!(parse_policy_pin("warm").err().map(|f| f.code), Some(1));
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\nq    22\n");
    }
}
