//! `smoothfs log` (S26.3) and `smoothfs promote|demote` (S26.6).
//!
//! - `smoothfs log [--pool P] [--path PATH | --oid OID] [--since TIME]
//!   [--limit N] [--before-id ID] [--json] [--db PATH]`: movement-log rows
//!   from the store, newest first. `--limit` defaults to 100 and is capped
//!   at 500; `--before-id` pages backwards; `--since` takes RFC 3339 or an
//!   age (`90s`, `15m`, `2h`, `7d`). `--json` prints an array of rows with
//!   `id`, `object_id`, `path`, `transaction_seq`, `from_state`,
//!   `to_state`, `source_tier`, `dest_tier`, `payload`, `written_at`.
//! - `smoothfs promote PATH` / `smoothfs demote PATH` (`--force`,
//!   `--json`, `--bwlimit`, `--pool`): `smoothfs move PATH --to` one rank
//!   faster / slower than the file's tier; refused (exit 2) at the fastest /
//!   slowest tier.
//!
//! Exit status: 0 success, 1 usage error, 2 operation failed (S26.6/2).

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;
use smoothfs_control::dataplane;
use smoothfs_control::store::{LOG_PAGE_DEFAULT, LOG_PAGE_MAX, LogQuery, LogRow, Store, Timestamp};
use uuid::Uuid;

use crate::cpcmd::{resolve_db, select_store_pool};
use crate::movecmd::{self, MoveArgs};
use crate::ops::{self, Fail};

#[derive(clap::Args)]
pub struct LogArgs {
    /// Pool name or UUID (needed with --path when pools are nested).
    #[arg(long)]
    pool: Option<String>,
    /// Only this file (a path inside a mounted pool).
    #[arg(long, conflicts_with = "oid")]
    path: Option<PathBuf>,
    /// Only this object (32 hex digits).
    #[arg(long)]
    oid: Option<String>,
    /// Rows written at or after this time (RFC 3339, or an age such as
    /// 15m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Rows per page (default 100, at most 500).
    #[arg(long)]
    limit: Option<usize>,
    /// Only rows older than this id (paging backwards).
    #[arg(long)]
    before_id: Option<i64>,
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
    /// The store (default /var/lib/smoothfs/smoothfs.db, else the
    /// control.db of a pool started with `smoothfs up`).
    #[arg(long)]
    db: Option<PathBuf>,
}

/// `--since`: RFC 3339 or an age before now.
fn parse_since(s: &str, now: Timestamp) -> Result<Timestamp, Fail> {
    if let Some(t) = Timestamp::parse(s) {
        return Ok(t);
    }
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => 0,
    };
    num.parse::<u64>()
        .ok()
        .filter(|_| mult > 0 && !num.is_empty())
        .and_then(|n| n.checked_mul(mult))
        .map(|secs| now.sub_secs(secs))
        .ok_or_else(|| {
            Fail::usage(format!(
                "invalid --since '{s}': expected RFC 3339 (2026-01-02T03:04:05Z) or an age (15m, 2h, 7d)"
            ))
        })
}

fn parse_limit(n: Option<usize>) -> Result<usize, Fail> {
    match n {
        None => Ok(LOG_PAGE_DEFAULT),
        Some(0) => Err(Fail::usage("--limit must be at least 1")),
        Some(n) => Ok(n.min(LOG_PAGE_MAX)),
    }
}

pub fn log(a: LogArgs) -> ExitCode {
    ops::finish(run_log(&a))
}

fn run_log(a: &LogArgs) -> Result<(), Fail> {
    let limit = parse_limit(a.limit)?;
    let since = match &a.since {
        Some(s) => Some(parse_since(s, Timestamp::now())?),
        None => None,
    };
    let mut object_id = match &a.oid {
        Some(s) => {
            Some(ops::parse_oid(s).ok_or_else(|| Fail::usage(format!("invalid --oid '{s}'")))?)
        }
        None => None,
    };
    let mut uuid_hint: Option<Uuid> = None;
    if let Some(path) = &a.path {
        let (pool, _rel, oid, _client) = crate::admin::resolve_oid(path, a.pool.as_deref())?;
        uuid_hint = Some(pool.uuid);
        object_id = Some(oid);
    }
    let db = resolve_db(a.db.as_deref(), a.pool.as_deref())?;
    if !db.exists() {
        return Err(Fail::op(
            libc::ENOENT,
            format!("no store at {}", db.display()),
        ));
    }
    let st = Store::open(&db).map_err(|e| Fail::op(libc::EIO, e))?;
    let namespace_id = if a.pool.is_some() || uuid_hint.is_some() {
        Some(select_store_pool(&st, a.pool.as_deref(), uuid_hint)?.namespace_id)
    } else {
        None
    };
    let rows = st
        .movement_log(&LogQuery {
            namespace_id,
            object_id,
            to_state: None,
            since,
            before_id: a.before_id,
            limit,
        })
        .map_err(|e| Fail::op(libc::EIO, e))?;
    if a.json {
        let v = Value::Array(rows.iter().map(LogRow::to_json).collect());
        return ops::write_out(&ops::to_json_text(&v));
    }
    ops::write_out(&log_table(&rows))
}

fn log_table(rows: &[LogRow]) -> String {
    if rows.is_empty() {
        return "no movement-log rows\n".into();
    }
    let header = [
        "ID", "WRITTEN", "OBJECT", "SEQ", "FROM", "TO", "TIERS", "PAYLOAD",
    ];
    let body: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let what = r.path.clone().unwrap_or_else(|| r.object_id.clone());
            let payload = match &r.payload {
                Value::Null => String::new(),
                Value::Object(m) if m.is_empty() => String::new(),
                v => v.to_string(),
            };
            [
                r.id.to_string(),
                r.written_at.clone(),
                what,
                r.transaction_seq.to_string(),
                r.from_state.map_or("-", |s| s.as_str()).to_string(),
                r.to_state.as_str().to_string(),
                format!("{} -> {}", r.source_tier, r.dest_tier),
                payload,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &body {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        let mut s = s.trim_end().to_string();
        s.push('\n');
        s
    };
    let mut out = line(&header);
    for r in &body {
        out.push_str(&line(&r.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    if let Some(last) = rows.last() {
        out.push_str(&format!("(older rows: --before-id {})\n", last.id));
    }
    out
}

// ---------------------------------------------------------------------------
// promote / demote
// ---------------------------------------------------------------------------

#[derive(clap::Args)]
pub struct RankArgs {
    /// A regular file inside a mounted pool.
    path: PathBuf,
    /// Move even if an SMB lease pins the file (breaks the lease).
    #[arg(long)]
    force: bool,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
    /// Copy bandwidth limit in bytes per second (K, M, G suffixes).
    #[arg(long, value_name = "BYTES_PER_S", default_value = "0")]
    bwlimit: String,
    /// Pool name or UUID (only needed when pools are nested).
    #[arg(long)]
    pool: Option<String>,
}

pub fn promote(a: RankArgs) -> ExitCode {
    step(a, true)
}

pub fn demote(a: RankArgs) -> ExitCode {
    step(a, false)
}

/// The destination rank one step up (toward 0) or down from `current`
/// in a pool of `tiers` tiers.
fn next_rank(current: u8, tiers: usize, up: bool) -> Result<u8, Fail> {
    if up {
        current.checked_sub(1).ok_or_else(|| {
            Fail::op(
                libc::EINVAL,
                "cannot promote: the file is already on the fastest tier (0)",
            )
        })
    } else if usize::from(current) + 1 >= tiers {
        Err(Fail::op(
            libc::EINVAL,
            format!("cannot demote: the file is already on the slowest tier ({current})"),
        ))
    } else {
        Ok(current + 1)
    }
}

fn step(a: RankArgs, up: bool) -> ExitCode {
    let to = match target_rank(&a, up) {
        Ok(r) => r,
        Err(f) => return ops::finish(Err(f)),
    };
    movecmd::run(MoveArgs {
        path: a.path,
        to: to.to_string(),
        force: a.force,
        json: a.json,
        bwlimit: a.bwlimit,
        pool: a.pool,
    })
}

fn target_rank(a: &RankArgs, up: bool) -> Result<u8, Fail> {
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
    let resolved = dataplane::resolve_path(&mut client, &pool.uuid, &rel)?;
    next_rank(resolved.current_tier, status.tiers.len(), up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_step_and_stop_at_the_ends() {
        assert_eq!(next_rank(1, 2, true).ok(), Some(0));
        assert_eq!(next_rank(0, 2, true).err().map(|f| f.code), Some(2));
        assert_eq!(next_rank(0, 3, false).ok(), Some(1));
        assert_eq!(next_rank(1, 3, false).ok(), Some(2));
        assert_eq!(next_rank(2, 3, false).err().map(|f| f.code), Some(2));
    }

    #[test]
    fn since_and_limit_parse() {
        let now = Timestamp::parse("2026-01-02T03:04:05Z").unwrap();
        assert_eq!(parse_since("2h", now).ok(), Some(now.sub_secs(7200)));
        assert_eq!(parse_since("90s", now).ok(), Some(now.sub_secs(90)));
        assert_eq!(parse_since("7d", now).ok(), Some(now.sub_secs(7 * 86400)));
        assert_eq!(
            parse_since("2025-12-31T00:00:00Z", now).ok(),
            Timestamp::parse("2025-12-31T00:00:00Z")
        );
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("h", now).is_err());
        assert_eq!(parse_limit(None).ok(), Some(100));
        assert_eq!(parse_limit(Some(700)).ok(), Some(500));
        assert!(parse_limit(Some(0)).is_err());
    }
}
