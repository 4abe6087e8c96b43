//! `smoothfs move PATH --to RANK [--force] [--json] [--bwlimit BYTES_PER_S]`:
//! an operator move (plan reason `operator`, S26.6), run in this process by
//! the control-plane worker ([`smoothfs_control::worker::run_move`]) against
//! the pool's control socket.
//!
//! Output: one line per movement state as the worker reaches it (text with
//! an RFC 3339 timestamp, or with `--json` one object
//! `{"ts", "state", "detail"}` per line; progress lines carry `progress`
//! instead of `state`), then a summary (`result`: `moved`, `unchanged`,
//! `refused` or `failed`). Exit status (S26.6/2): 0 moved or already there,
//! 1 usage error (bad rank, bad size, not a file in a pool), 2 the move
//! failed or was refused, with the reason and what to do next on stderr.
//!
//! Ctrl-C or SIGTERM cancels the copy; the worker then aborts the plan, so
//! the file stays where it was.
//!
//! Until the control-plane daemon exists this command does not record the
//! move in the store; `smoothfs move abort|retry|status` (which need the
//! store) are not here yet.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};
use smoothfs_control::copy::Throttle;
use smoothfs_control::dataplane;
use smoothfs_control::worker::{
    self, IoPriority, MoveError, MoveObserver, MoveOptions, MoveOutcome, MoveReport, Refusal,
};
use smoothfs_uapi::error::errno_name;
use smoothfs_uapi::ids::MovementState;

use crate::ops::{self, Fail};

/// Exit status of a move that failed or was refused (S26.6/2).
const EXIT_MOVE_FAILED: u8 = 2;

#[derive(clap::Args)]
pub struct MoveArgs {
    /// A regular file inside a mounted pool.
    pub(crate) path: PathBuf,
    /// Destination tier rank (0 = fastest).
    #[arg(long = "to", value_name = "RANK")]
    pub(crate) to: String,
    /// Move even if an SMB lease pins the file (breaks the lease; bypasses
    /// no other pin).
    #[arg(long)]
    pub(crate) force: bool,
    /// Print JSON lines.
    #[arg(long)]
    pub(crate) json: bool,
    /// Copy bandwidth limit in bytes per second; K, M, G (binary) suffixes
    /// accepted; 0 = unlimited.
    #[arg(long, value_name = "BYTES_PER_S", default_value = "0")]
    pub(crate) bwlimit: String,
    /// Pool name or UUID (only needed when pools are nested).
    #[arg(long)]
    pub(crate) pool: Option<String>,
}

/// A rank as typed by the operator.
fn parse_rank(s: &str) -> Result<u8, Fail> {
    s.trim().parse::<u8>().map_err(|_| {
        Fail::usage(format!(
            "invalid rank '{s}': expected a tier number (0 = fastest tier)"
        ))
    })
}

/// `10485760`, `10M`, `10MiB`, `512k`, `1G`; binary multiples.
fn parse_bytes_per_s(s: &str) -> Result<u64, Fail> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        _ => return Err(Fail::usage(format!("invalid --bwlimit '{s}'"))),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| Fail::usage(format!("invalid --bwlimit '{s}'")))
}

/// The transaction seq of an operator move: microseconds since the epoch,
/// which grows across invocations (S10.1/2) as long as the clock does.
fn transaction_seq() -> u64 {
    let us = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(1);
    u64::try_from(us).unwrap_or(u64::MAX).max(1)
}

/// Block SIGINT and SIGTERM in this process and raise `cancel` when one
/// arrives, from a thread that waits for them. Further signals only repeat
/// the notice: quitting with a plan accepted would leave the object
/// `plan_accepted` until the control plane recovers it.
fn cancel_on_signals(cancel: Arc<AtomicBool>) {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset/pthread_sigmask
    // only read and write the set we own. The mask is set before any other
    // thread starts, so every thread inherits it and only sigwait sees the
    // signals.
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
            if cancel.swap(true, Ordering::SeqCst) {
                eprintln!("smoothfs: already cancelling; waiting for the plan to be aborted");
            } else {
                eprintln!("smoothfs: cancelling the move; the file stays where it was");
            }
        }
    });
}

/// Prints the worker's transitions as they happen.
struct Printer {
    json: bool,
    /// Human output to a terminal: show a progress line.
    tty: bool,
    copy_started: Option<Instant>,
    last_progress: Option<Instant>,
    progress_shown: bool,
}

impl Printer {
    fn line(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        if self.progress_shown {
            let _ = out.write_all(b"\r\x1b[K");
            self.progress_shown = false;
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }

    fn json_line(&mut self, v: Value) {
        let text = serde_json::to_string(&v).unwrap_or_else(|_| "{}".into());
        self.line(&text);
    }
}

fn now() -> String {
    ops::rfc3339_ms(SystemTime::now())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl MoveObserver for Printer {
    fn state(&mut self, state: MovementState, detail: &str) {
        if state == MovementState::CopyInProgress {
            self.copy_started = Some(Instant::now());
        }
        if self.json {
            self.json_line(json!({"ts": now(), "state": state.as_str(), "detail": detail}));
        } else {
            let text = format!("{}  {:<20}  {detail}", now(), state.as_str());
            self.line(text.trim_end());
        }
    }

    fn progress(&mut self, done: u64, total: u64) {
        let now_i = Instant::now();
        let rate = self
            .copy_started
            .map(|t| now_i.duration_since(t).as_secs_f64())
            .filter(|s| *s > 0.0)
            .map_or(0.0, |s| mib(done) / s);
        if self.json {
            // At most once a second, plus the final line.
            if done < total
                && self
                    .last_progress
                    .is_some_and(|l| now_i.duration_since(l).as_secs_f64() < 1.0)
            {
                return;
            }
            self.last_progress = Some(now_i);
            self.json_line(json!({
                "ts": now(),
                "progress": {"bytes_done": done, "bytes_total": total, "mib_per_s": rate},
            }));
        } else if self.tty {
            let pct = if total == 0 {
                100.0
            } else {
                done as f64 * 100.0 / total as f64
            };
            let mut out = std::io::stdout().lock();
            let _ = write!(
                out,
                "\r\x1b[K  copying {pct:5.1}%  {:.1}/{:.1} MiB  {rate:.1} MiB/s",
                mib(done),
                mib(total)
            );
            let _ = out.flush();
            self.progress_shown = true;
        }
    }
}

pub fn run(a: MoveArgs) -> ExitCode {
    ops::finish(run_move_cmd(&a))
}

fn summary_moved(p: &mut Printer, path: &Path, r: &MoveReport) {
    let c = &r.copy;
    if p.json {
        p.json_line(json!({
            "ts": now(),
            "result": "moved",
            "path": path,
            "rel_path": r.rel_path,
            "object_id": ops::hex(&r.oid),
            "from_tier": r.from_tier,
            "to_tier": r.to_tier,
            "transaction_seq": r.transaction_seq,
            "generation": r.generation,
            "lower_path": r.lower_path,
            "bytes": c.bytes_total,
            "bytes_copied": c.bytes_copied,
            "method": c.method.as_str(),
            "blake3": c.blake3,
            "copy_seconds": c.duration.as_secs_f64(),
            "seconds": r.duration.as_secs_f64(),
            "mib_per_s": c.mib_per_s(),
            "cleanup_errno": r.cleanup_errno,
            "cleanup_note": r.cleanup_note,
        }));
    } else {
        p.line(&format!(
            "moved {}: tier {} -> {}, {} bytes ({:.1} MiB) via {} in {:.2} s ({:.1} MiB/s), \
             {:.2} s in all, generation {}",
            path.display(),
            r.from_tier,
            r.to_tier,
            c.bytes_total,
            mib(c.bytes_total),
            c.method,
            c.duration.as_secs_f64(),
            c.mib_per_s(),
            r.duration.as_secs_f64(),
            r.generation
        ));
        if let Some(note) = &r.cleanup_note {
            p.line(&format!("note: {note}"));
        }
    }
}

fn run_move_cmd(a: &MoveArgs) -> Result<(), Fail> {
    let rank = parse_rank(&a.to)?;
    let bwlimit = parse_bytes_per_s(&a.bwlimit)?;
    let (pool, rel) = ops::pool_for_path(&a.path, a.pool.as_deref())?;
    if rel.as_os_str().is_empty() {
        return Err(Fail::usage(format!(
            "{} is the root of pool '{}': name a file inside it",
            a.path.display(),
            pool.name
        )));
    }
    let mut client = ops::connect(&pool)?;
    let status = dataplane::status(&mut client, &pool.uuid)?;
    if status.tier(rank).is_none() {
        let n = status.tiers.len();
        return Err(Fail::usage(format!(
            "invalid rank {rank}: pool '{}' has {n} tier(s), ranks 0-{}",
            pool.name,
            n.saturating_sub(1)
        )));
    }
    let resolved = dataplane::resolve_path(&mut client, &pool.uuid, &rel)?;
    if resolved.current_tier == rank {
        let r = Refusal::AlreadyOnDestination { rank };
        return already_there(a, &r);
    }

    let cancel = Arc::new(AtomicBool::new(false));
    cancel_on_signals(Arc::clone(&cancel));
    if let Err(e) = worker::set_thread_io_priority(IoPriority::DEFAULT) {
        tracing::debug!("cannot set I/O priority: {e}");
    }
    let mut opts = MoveOptions::new(transaction_seq());
    opts.force = a.force;
    opts.rel_path = Some(rel.clone());
    opts.copy.cancel = Some(cancel);
    if bwlimit > 0 {
        opts.copy.throttle = Some(Arc::new(Throttle::new(bwlimit)));
    }

    let mut printer = Printer {
        json: a.json,
        tty: !a.json && std::io::stdout().is_terminal(),
        copy_started: None,
        last_progress: None,
        progress_shown: false,
    };
    if !a.json {
        printer.line(&format!(
            "moving {} (pool {}, object {}) from tier {} to tier {}, seq {}",
            a.path.display(),
            pool.name,
            ops::hex(&resolved.oid),
            resolved.current_tier,
            rank,
            opts.transaction_seq
        ));
    }

    let result = worker::run_move(
        &mut client,
        &pool.uuid,
        &resolved.oid,
        rank,
        &opts,
        &mut printer,
    );
    match result {
        Ok(MoveOutcome::Moved(report)) => {
            summary_moved(&mut printer, &a.path, &report);
            Ok(())
        }
        Ok(MoveOutcome::Refused(r @ Refusal::AlreadyOnDestination { .. })) => already_there(a, &r),
        Ok(MoveOutcome::Refused(r)) => {
            if a.json {
                printer.json_line(json!({
                    "ts": now(), "result": "refused", "reason": r.to_string(), "hint": r.hint(),
                }));
            }
            Err(Fail {
                code: EXIT_MOVE_FAILED,
                msg: format!("move refused: {r}\nsmoothfs: {}", r.hint()),
            })
        }
        Err(e) => Err(failure(&mut printer, a.json, &e)),
    }
}

/// Nothing to do: the file is on the requested tier (exit 0).
fn already_there(a: &MoveArgs, r: &Refusal) -> Result<(), Fail> {
    let text = if a.json {
        serde_json::to_string(&json!({"ts": now(), "result": "unchanged", "reason": r.to_string()}))
            .unwrap_or_else(|_| "{}".into())
    } else {
        format!("{}: {r}; nothing to do", a.path.display())
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    Ok(())
}

fn failure(p: &mut Printer, json: bool, e: &MoveError) -> Fail {
    let errno = errno_name(e.errno());
    let reason = e.reason();
    if json {
        p.json_line(json!({
            "ts": now(), "result": "failed", "errno": errno, "reason": reason, "hint": e.hint(),
        }));
    }
    let what = if e.is_after_switch() {
        "move stopped after the switch"
    } else {
        "move failed"
    };
    Fail {
        code: EXIT_MOVE_FAILED,
        msg: format!("{what}: {errno}: {reason}\nsmoothfs: {}", e.hint()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_rates_parse() {
        assert_eq!(parse_rank("1").ok(), Some(1));
        assert!(parse_rank("-1").is_err());
        assert!(parse_rank("fast").is_err());
        assert!(parse_rank("256").is_err());
        assert_eq!(parse_rank("x").err().map(|f| f.code), Some(1));
        assert_eq!(parse_bytes_per_s("0").ok(), Some(0));
        assert_eq!(parse_bytes_per_s("10485760").ok(), Some(10 << 20));
        assert_eq!(parse_bytes_per_s("10M").ok(), Some(10 << 20));
        assert_eq!(parse_bytes_per_s("10MiB").ok(), Some(10 << 20));
        assert_eq!(parse_bytes_per_s("512k").ok(), Some(512 << 10));
        assert_eq!(parse_bytes_per_s("1G").ok(), Some(1 << 30));
        assert!(parse_bytes_per_s("fast").is_err());
        assert!(parse_bytes_per_s("99999999999999G").is_err());
    }

    #[test]
    fn seqs_grow() {
        let a = transaction_seq();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(transaction_seq() > a);
    }
}
