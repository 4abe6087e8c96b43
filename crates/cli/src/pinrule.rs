//! `smoothfs pin rule add|list|rm` (S8.6/2): pin rules in the store. The
//! control plane applies them (S8.6/4, [`smoothfs_control::pinrules`]).
//!
//! - `pin rule add --pool P '<glob>' hot|cold|none [--mediated] [--json]`
//! - `pin rule list [--pool P] [--json]`
//! - `pin rule rm <id> [--json]`
//!
//! All take `--db PATH` (default as for `smoothfs plan`). Exit status: 0
//! success, 1 usage error, 2 operation failed (S26.6/2).

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{Value, json};
use smoothfs_control::pinrules;
use smoothfs_control::store::{PinRule, PoolRecord, Store, Timestamp};
use smoothfs_uapi::ids::PolicyPin;

use crate::cpcmd::{resolve_db, select_store_pool};
use crate::ops::{self, Fail};

#[derive(Subcommand)]
pub enum RuleCmd {
    /// Add a rule: files matching the glob get the pin.
    Add(RuleAddArgs),
    /// List rules.
    List(RuleListArgs),
    /// Remove a rule (the pins it set are cleared).
    Rm(RuleRmArgs),
}

#[derive(clap::Args)]
pub struct RuleAddArgs {
    /// Pool name or UUID (needed when the store knows several pools).
    #[arg(long)]
    pool: Option<String>,
    /// Glob over the relative path: `*`, `?`, `**`, `[…]`; a trailing `/`
    /// means the directory and everything below it.
    pattern: String,
    /// hot, cold or none.
    value: String,
    /// Also open matching files always mediated (S13.1).
    #[arg(long)]
    mediated: bool,
    #[arg(long)]
    json: bool,
    /// The store.
    #[arg(long)]
    db: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct RuleListArgs {
    /// Only this pool's rules.
    #[arg(long)]
    pool: Option<String>,
    #[arg(long)]
    json: bool,
    /// The store.
    #[arg(long)]
    db: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct RuleRmArgs {
    /// The rule id (see `pin rule list`).
    id: i64,
    #[arg(long)]
    json: bool,
    /// The store.
    #[arg(long)]
    db: Option<PathBuf>,
}

pub fn run(cmd: RuleCmd) -> Result<(), Fail> {
    match cmd {
        RuleCmd::Add(a) => add(&a),
        RuleCmd::List(a) => list(&a),
        RuleCmd::Rm(a) => rm(&a),
    }
}

fn open(db: Option<&std::path::Path>, pool: Option<&str>) -> Result<Store, Fail> {
    let db = resolve_db(db, pool)?;
    if !db.exists() {
        return Err(Fail::op(
            libc::ENOENT,
            format!(
                "no store at {} (start the control plane first)",
                db.display()
            ),
        ));
    }
    Store::open(&db).map_err(|e| Fail::op(libc::EIO, e))
}

fn parse_pin(s: &str) -> Result<PolicyPin, Fail> {
    match s.trim().to_ascii_lowercase().as_str() {
        "hot" | "pin_hot" => Ok(PolicyPin::PinHot),
        "cold" | "pin_cold" => Ok(PolicyPin::PinCold),
        "none" => Ok(PolicyPin::None),
        _ => Err(Fail::usage(format!(
            "invalid pin '{s}': expected hot, cold or none"
        ))),
    }
}

fn rule_json(r: &PinRule, pools: &[PoolRecord]) -> Value {
    let pool = pools
        .iter()
        .find(|p| p.namespace_id == r.namespace_id)
        .map(|p| p.name.clone());
    json!({
        "id": r.id,
        "pool": pool,
        "namespace_id": r.namespace_id,
        "pattern": r.pattern,
        "pin": r.pin.as_str(),
        "mediated": r.mediated,
        "created_at": r.created_at,
    })
}

fn add(a: &RuleAddArgs) -> Result<(), Fail> {
    let pin = parse_pin(&a.value)?;
    pinrules::validate(&a.pattern)
        .map_err(|e| Fail::usage(format!("invalid pattern '{}': {e}", a.pattern)))?;
    let mut st = open(a.db.as_deref(), a.pool.as_deref())?;
    let pool = select_store_pool(&st, a.pool.as_deref(), None)?;
    let id = st
        .add_pin_rule(
            &pool.namespace_id,
            &a.pattern,
            pin,
            a.mediated,
            Timestamp::now(),
        )
        .map_err(|e| Fail::op(libc::EIO, e))?;
    let rule = st
        .pin_rules(Some(&pool.namespace_id))
        .map_err(|e| Fail::op(libc::EIO, e))?
        .into_iter()
        .find(|r| r.id == id);
    if a.json {
        let v = rule.map_or(json!({"id": id}), |r| rule_json(&r, &[pool]));
        return ops::write_out(&ops::to_json_text(&v));
    }
    ops::write_out(&format!(
        "rule {id} added: pool {} '{}' -> {}{}; the control plane applies it within 60 s\n",
        pool.name,
        a.pattern,
        pin.as_str(),
        if a.mediated { " (mediated)" } else { "" }
    ))
}

fn list(a: &RuleListArgs) -> Result<(), Fail> {
    let st = open(a.db.as_deref(), a.pool.as_deref())?;
    let ns = match &a.pool {
        Some(p) => Some(select_store_pool(&st, Some(p), None)?.namespace_id),
        None => None,
    };
    let rules = st
        .pin_rules(ns.as_deref())
        .map_err(|e| Fail::op(libc::EIO, e))?;
    let pools = st.pools().map_err(|e| Fail::op(libc::EIO, e))?;
    if a.json {
        let v = Value::Array(rules.iter().map(|r| rule_json(r, &pools)).collect());
        return ops::write_out(&ops::to_json_text(&v));
    }
    if rules.is_empty() {
        return ops::write_out("no pin rules\n");
    }
    let mut out = format!(
        "{:<6}  {:<12}  {:<8}  {:<8}  {:<24}  PATTERN\n",
        "ID", "POOL", "PIN", "MEDIATED", "CREATED"
    );
    for r in &rules {
        let v = rule_json(r, &pools);
        out.push_str(&format!(
            "{:<6}  {:<12}  {:<8}  {:<8}  {:<24}  {}\n",
            r.id,
            v["pool"].as_str().unwrap_or(&r.namespace_id),
            r.pin.as_str(),
            if r.mediated { "yes" } else { "no" },
            r.created_at,
            r.pattern
        ));
    }
    ops::write_out(&out)
}

fn rm(a: &RuleRmArgs) -> Result<(), Fail> {
    let mut st = open(a.db.as_deref(), None)?;
    let removed = st
        .remove_pin_rule(a.id)
        .map_err(|e| Fail::op(libc::EIO, e))?;
    if !removed {
        return Err(Fail::op(libc::ENOENT, format!("no pin rule {}", a.id)));
    }
    if a.json {
        return ops::write_out(&ops::to_json_text(&json!({"id": a.id, "removed": true})));
    }
    ops::write_out(&format!(
        "rule {} removed; the control plane clears the pins it set within 60 s\n",
        a.id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse() {
        assert_eq!(parse_pin("hot").ok(), Some(PolicyPin::PinHot));
        assert_eq!(parse_pin("COLD").ok(), Some(PolicyPin::PinCold));
        assert_eq!(parse_pin("none").ok(), Some(PolicyPin::None));
        assert_eq!(parse_pin("warm").err().map(|f| f.code), Some(1));
    }
}
