//! `smoothfs lun pin|unpin PATH` (S18.1: PIN_SET PIN_STATE 5 / 0) and
//! `smoothfs lun move PATH --to RANK --target ID [--controller KIND]`
//! (S18.3: prepare with the target controller, then the worker's move with
//! the LUN plan, run in this process against the pool's control socket).
//!
//! `lun move` reads the pool record and the object's row from the store
//! (`--db`, as `smoothfs plan`) and records `pin_lun` there; like
//! `smoothfs move`, it does not write the movement states into the store,
//! so the row's tier is brought up to date by the next inventory sync.
//! Exit status: 0 done, 1 usage error, 2 the operation failed (the reason
//! says whether the target was left stopped).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use smoothfs_control::config::LunController;
use smoothfs_control::lun::{self, LunRequest, LunStore};
use smoothfs_control::store::Store;
use smoothfs_control::worker::{self, MoveObserver, MoveOptions, MoveOutcome};
use smoothfs_uapi::ids::MovementState;

use crate::ops::{self, Fail};
use crate::{admin, cpcmd};

#[derive(Subcommand)]
pub enum LunCmd {
    /// Set the LUN pin (`lun`=1) on a file before a target opens it.
    Pin(PinArgs),
    /// Clear the LUN pin after the target is destroyed.
    Unpin(PinArgs),
    /// Move an active LUN: stop and drain the target, move, re-pin, resume.
    Move(MoveArgs),
}

#[derive(clap::Args)]
pub struct PinArgs {
    /// A file inside a mounted pool.
    path: PathBuf,
    /// Pool name or UUID (only needed when pools are nested).
    #[arg(long)]
    pool: Option<String>,
}

#[derive(clap::Args)]
pub struct MoveArgs {
    /// The LUN backing file inside a mounted pool.
    path: PathBuf,
    /// Destination tier rank (0 = fastest).
    #[arg(long = "to", value_name = "RANK")]
    to: u8,
    /// The target id the controller stops and resumes (tgt: the tid; lio:
    /// `<iqn>/tpgt_<n>`; command: passed to the executables).
    #[arg(long)]
    target: String,
    /// tgt, lio, command or none (default: the store's
    /// `smoothfs_lun_controller`).
    #[arg(long)]
    controller: Option<String>,
    /// For `--controller command`: the stop executable.
    #[arg(long, value_name = "EXE")]
    stop_cmd: Option<PathBuf>,
    /// For `--controller command`: the resume executable.
    #[arg(long, value_name = "EXE")]
    resume_cmd: Option<PathBuf>,
    /// The store (default as `smoothfs plan`).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Pool name or UUID.
    #[arg(long)]
    pool: Option<String>,
}

pub fn run(c: LunCmd) -> ExitCode {
    ops::finish(match c {
        LunCmd::Pin(a) => pin(&a, true),
        LunCmd::Unpin(a) => pin(&a, false),
        LunCmd::Move(a) => lun_move(&a),
    })
}

fn pin(a: &PinArgs, pinned: bool) -> Result<(), Fail> {
    let (pool, _rel, oid, mut c) = admin::resolve_oid(&a.path, a.pool.as_deref())?;
    lun::pin_set(&mut c, &pool.uuid, &oid, pinned).map_err(|e| Fail::op(libc::EIO, e))?;
    println!(
        "{}: lun pin {}",
        a.path.display(),
        if pinned { "set" } else { "cleared" }
    );
    Ok(())
}

fn parse_controller(s: &str) -> Result<LunController, Fail> {
    match s {
        "none" => Ok(LunController::None),
        "tgt" => Ok(LunController::Tgt),
        "lio" => Ok(LunController::Lio),
        "command" => Ok(LunController::Command),
        _ => Err(Fail::usage(format!(
            "invalid --controller '{s}': expected tgt, lio, command or none"
        ))),
    }
}

/// Prints each movement state.
struct Lines;

impl MoveObserver for Lines {
    fn state(&mut self, state: MovementState, detail: &str) {
        println!("  {:<20}  {detail}", state.as_str());
    }
}

fn lun_move(a: &MoveArgs) -> Result<(), Fail> {
    let (pool, _rel, oid, mut c) = admin::resolve_oid(&a.path, a.pool.as_deref())?;
    let db = cpcmd::resolve_db(a.db.as_deref(), a.pool.as_deref())?;
    let st = Store::open(&db).map_err(|e| Fail::op(libc::EIO, e))?;
    let record = cpcmd::select_store_pool(&st, a.pool.as_deref(), Some(pool.uuid))?;
    let (policy, _) = st.load_policy().map_err(|e| Fail::op(libc::EIO, e))?;
    let kind = match &a.controller {
        Some(s) => parse_controller(s)?,
        None => policy.lun_controller,
    };
    if kind == LunController::Command && (a.stop_cmd.is_none() || a.resume_cmd.is_none()) {
        return Err(Fail::usage(
            "--controller command needs --stop-cmd and --resume-cmd",
        ));
    }
    let time_seq = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let seq = st
        .next_transaction_seq(&record.namespace_id)
        .map_err(|e| Fail::op(libc::EIO, e))?
        .max(time_seq);
    let store: Arc<dyn LunStore> = Arc::new(Mutex::new(st));
    let req = LunRequest {
        pool_uuid: pool.uuid,
        oid,
        record: &record,
        dest_rank: a.to,
        target_id: a.target.clone(),
        transaction_seq: seq,
        controller: lun::controller_for(kind, a.stop_cmd.clone(), a.resume_cmd.clone()),
        store,
    };
    let plan = lun::prepare(
        &mut c,
        &req,
        Duration::from_millis(policy.lun_drain_quiet_ms),
    )
    .map_err(|e| Fail::op(libc::EBUSY, format!("lun move not prepared: {e}")))?;
    println!(
        "moving LUN {} from tier {} to tier {} (target {}, seq {seq})",
        a.path.display(),
        plan.source_rank,
        plan.dest_rank,
        a.target
    );
    let mut opts = MoveOptions::new(seq);
    opts.rel_path = Some(plan.rel_path.clone());
    opts.reserve_bytes = policy.move_reserve_bytes;
    opts.verify_source_rehash = policy.verify_source_rehash;
    opts.copy.readback_direct =
        policy.verify_readback == smoothfs_control::config::VerifyReadback::Direct;
    opts.lun = Some(plan);
    match worker::run_move(&mut c, &pool.uuid, &oid, a.to, &opts, &mut Lines) {
        Ok(MoveOutcome::Moved(r)) => {
            println!(
                "moved {}: tier {} -> {}, generation {}; target {} resumed",
                a.path.display(),
                r.from_tier,
                r.to_tier,
                r.generation,
                a.target
            );
            Ok(())
        }
        Ok(MoveOutcome::Refused(r)) => Err(Fail {
            code: 2,
            msg: format!("lun move refused: {r}\nsmoothfs: {}", r.hint()),
        }),
        Err(e) => Err(Fail {
            code: 2,
            msg: format!("lun move failed: {}\nsmoothfs: {}", e.reason(), e.hint()),
        }),
    }
}
