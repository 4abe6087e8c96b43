//! Pin rules (S8.6/2-4): glob matching, precedence and applying the rules
//! of a pool to its rows with PIN_SET (`pin_origin = 'rule'`).
//!
//! Glob (S8.6/2), matched against the object's relative path, case
//! sensitive: `*` and `?` stay within one component, `**` (a whole
//! component) spans any number of components, `[…]` is a class (`!` or `^`
//! negates, `a-z` ranges), a trailing `/` means that directory and
//! everything below it.
//!
//! Precedence (S8.6/3): an explicit pin beats any rule (a row whose pin was
//! set other than by a rule is left alone); among matching rules the one
//! with the longest literal prefix wins, then the newest (largest id). A
//! `none` rule therefore cancels broader rules for its subtree.
//!
//! Must never: touch a row whose pin an operator set, or leave a pin a
//! removed rule set.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use smoothfs_uapi::Result as UapiResult;
use smoothfs_uapi::client::Client;
use smoothfs_uapi::codec::AttrBuf;
use smoothfs_uapi::ids::{Attr, Command, MovementState, PinState, PolicyPin};
use uuid::Uuid;

use crate::daemon::lock;
use crate::store::{ObjectRow, PinRule, PoolRecord, Result, Store, Timestamp, oid_hex};

/// `pin_origin` of pins set by rules.
pub const ORIGIN_RULE: &str = "rule";
/// Rows read per store page while applying.
const PAGE: usize = 1000;

/// Whether `pattern` is a well-formed glob (non-empty, classes closed).
pub fn validate(pattern: &str) -> std::result::Result<(), String> {
    let p = pattern.trim_start_matches('/');
    if p.is_empty() {
        return Err("empty pattern".into());
    }
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' {
            match class_end(b, i) {
                Some(e) => i = e,
                None => return Err(format!("unclosed '[' in '{pattern}'")),
            }
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// The index after the `]` closing the class that starts at `start`.
fn class_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if i < b.len() && (b[i] == b'!' || b[i] == b'^') {
        i += 1;
    }
    // A `]` right after the opening is literal.
    if i < b.len() && b[i] == b']' {
        i += 1;
    }
    while i < b.len() {
        if b[i] == b']' {
            return Some(i + 1);
        }
        if b[i] == b'/' {
            return None;
        }
        i += 1;
    }
    None
}

/// Bytes before the first glob character (`*`, `?`, `[`).
pub fn literal_prefix_len(pattern: &str) -> usize {
    let p = pattern.trim_start_matches('/');
    p.find(['*', '?', '[']).unwrap_or(p.len())
}

/// Whether `pattern` matches the relative path `path` (S8.6/2).
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let mut p = pattern.trim_start_matches('/');
    let path = path.trim_start_matches('/');
    let subtree = p.ends_with('/');
    if subtree {
        p = p.trim_end_matches('/');
    }
    let mut pats: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    if subtree {
        pats.push("**");
    }
    let comps: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match_components(&pats, &comps)
}

fn match_components(pats: &[&str], comps: &[&str]) -> bool {
    match pats.split_first() {
        None => comps.is_empty(),
        Some((&"**", rest)) => (0..=comps.len()).any(|k| match_components(rest, &comps[k..])),
        Some((p, rest)) => match comps.split_first() {
            Some((c, crest)) => {
                match_component(p.as_bytes(), c.as_bytes()) && match_components(rest, crest)
            }
            None => false,
        },
    }
}

/// One component against one pattern component (`*`, `?`, `[…]`).
fn match_component(p: &[u8], s: &[u8]) -> bool {
    if p.is_empty() {
        return s.is_empty();
    }
    match p[0] {
        b'*' => {
            let mut rest = &p[1..];
            while rest.first() == Some(&b'*') {
                rest = &rest[1..];
            }
            (0..=s.len()).any(|k| match_component(rest, &s[k..]))
        }
        b'?' => !s.is_empty() && match_component(&p[1..], &s[1..]),
        b'[' => match class_end(p, 0) {
            Some(end) => {
                !s.is_empty()
                    && class_matches(&p[1..end - 1], s[0])
                    && match_component(&p[end..], &s[1..])
            }
            None => s.first() == Some(&b'[') && match_component(&p[1..], &s[1..]),
        },
        c => s.first() == Some(&c) && match_component(&p[1..], &s[1..]),
    }
}

/// `body` is the class without its brackets.
fn class_matches(body: &[u8], c: u8) -> bool {
    let (neg, body) = match body.first() {
        Some(b'!' | b'^') => (true, &body[1..]),
        _ => (false, body),
    };
    let mut hit = false;
    let mut i = 0;
    while i < body.len() {
        if i + 2 < body.len() && body[i + 1] == b'-' {
            if body[i] <= c && c <= body[i + 2] {
                hit = true;
            }
            i += 3;
        } else {
            if body[i] == c {
                hit = true;
            }
            i += 1;
        }
    }
    hit != neg
}

/// The rule that decides `path` (S8.6/3): longest literal prefix, then
/// newest.
pub fn winning_rule<'a>(rules: &'a [PinRule], path: &str) -> Option<&'a PinRule> {
    rules
        .iter()
        .filter(|r| glob_match(&r.pattern, path))
        .max_by_key(|r| (literal_prefix_len(&r.pattern), r.id))
}

/// The (policy pin, mediated) rules ask for at `path`; `None` when no rule
/// sets anything there (no match, or a `none` rule without `--mediated`).
pub fn desired(rules: &[PinRule], path: &str) -> Option<(PolicyPin, bool)> {
    winning_rule(rules, path)
        .map(|r| (r.pin, r.mediated))
        .filter(|(pin, med)| *pin != PolicyPin::None || *med)
}

/// PIN_SET(POOL_UUID, OBJECT_ID, POLICY_PIN, MEDIATED): returns the
/// effective pin, the policy pin and the mediated flag the data plane
/// reports.
pub fn pin_set_policy(
    c: &mut Client,
    pool: &Uuid,
    oid: &[u8; 16],
    pin: PolicyPin,
    mediated: bool,
) -> UapiResult<(PinState, PolicyPin, bool)> {
    let mut req = AttrBuf::new();
    req.put_bytes(Attr::PoolUuid, pool.as_bytes())
        .put_bytes(Attr::ObjectId, oid)
        .put_u8(Attr::PolicyPin, pin.number())
        .put_bool(Attr::Mediated, mediated);
    let reply = c.request(Command::PinSet, &req)?;
    let a = reply.attrs();
    Ok((
        PinState::from_wire(a.get_u8(Attr::PinState)?.unwrap_or(0)),
        PolicyPin::from_wire(a.get_u8(Attr::PolicyPin)?.unwrap_or(pin.number())),
        a.get_bool(Attr::Mediated)?.unwrap_or(mediated),
    ))
}

/// What a row needs: `Some((pin, mediated, origin))` to PIN_SET, `None`
/// to leave it.
pub fn action_for(row: &ObjectRow, rules: &[PinRule]) -> Option<(PolicyPin, bool, &'static str)> {
    if row.movement_state == MovementState::Stale {
        return None;
    }
    let by_rule = row.pin_origin == ORIGIN_RULE;
    // An explicit pin (or one set before rules tracked it) beats rules.
    if !by_rule && (!row.pin_origin.is_empty() || row.policy_pin != PolicyPin::None || row.mediated)
    {
        return None;
    }
    match desired(rules, &row.rel_path) {
        Some((pin, med)) => (!by_rule || row.policy_pin != pin || row.mediated != med).then_some((
            pin,
            med,
            ORIGIN_RULE,
        )),
        None => by_rule.then_some((PolicyPin::None, false, "")),
    }
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub rows: usize,
    pub set: usize,
    pub cleared: usize,
    pub errors: usize,
}

fn applied() -> &'static Mutex<HashMap<String, String>> {
    static APPLIED: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    APPLIED.get_or_init(|| Mutex::new(HashMap::new()))
}

fn fingerprint(rules: &[PinRule]) -> String {
    rules
        .iter()
        .map(|r| format!("{}:{}:{}:{}", r.id, r.pattern, r.pin.as_str(), r.mediated))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether the pool's rules changed since the last [`apply_pool`].
pub fn rules_changed(store: &Mutex<Store>, namespace_id: &str) -> Result<bool> {
    let rules = lock(store).pin_rules(Some(namespace_id))?;
    let fp = fingerprint(&rules);
    Ok(lock(applied()).get(namespace_id) != Some(&fp))
}

/// Apply the pool's rules to every row of the pool (S8.6/4). PIN_SET
/// failures are logged and counted; the next pass retries them.
pub fn apply_pool(
    store: &Mutex<Store>,
    client: &mut Client,
    uuid: &Uuid,
    pool: &PoolRecord,
) -> Result<ApplyReport> {
    let ns = pool.namespace_id.as_str();
    let rules = lock(store).pin_rules(Some(ns))?;
    let fp = fingerprint(&rules);
    let mut report = ApplyReport::default();
    let mut after: Option<[u8; 16]> = None;
    loop {
        let rows = lock(store).objects(ns, None, after.as_ref(), PAGE)?;
        let Some(last) = rows.last() else { break };
        after = Some(last.object_id);
        report.rows += rows.len();
        for row in &rows {
            let Some((pin, med, origin)) = action_for(row, &rules) else {
                continue;
            };
            match pin_set_policy(client, uuid, &row.object_id, pin, med) {
                Ok((eff, pin_back, med_back)) => {
                    lock(store).set_pins(
                        &row.object_id,
                        eff,
                        pin_back,
                        origin,
                        med_back,
                        Timestamp::now(),
                    )?;
                    if origin.is_empty() {
                        report.cleared += 1;
                    } else {
                        report.set += 1;
                    }
                }
                Err(e) => {
                    report.errors += 1;
                    tracing::warn!(oid = %oid_hex(&row.object_id), path = %row.rel_path,
                        "pin rule: PIN_SET: {e}");
                }
            }
        }
        if rows.len() < PAGE {
            break;
        }
    }
    if report.errors == 0 {
        lock(applied()).insert(ns.to_string(), fp);
    }
    if report.set > 0 || report.cleared > 0 {
        tracing::info!(pool = %pool.name, set = report.set, cleared = report.cleared,
            "pin rules applied");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: i64, pattern: &str, pin: PolicyPin) -> PinRule {
        PinRule {
            id,
            namespace_id: "ns".into(),
            pattern: pattern.into(),
            pin,
            mediated: false,
            created_at: String::new(),
        }
    }

    #[test]
    fn glob_components() {
        assert!(glob_match("*.iso", "a.iso"));
        assert!(!glob_match("*.iso", "d/a.iso"));
        assert!(glob_match("d/?.iso", "d/a.iso"));
        assert!(!glob_match("d/?.iso", "d/ab.iso"));
        assert!(!glob_match("d*", "d/x"));
        assert!(glob_match("vm/**", "vm/a"));
        assert!(glob_match("vm/**", "vm/x/y/z.img"));
        assert!(!glob_match("vm/**", "vmx/a"));
        assert!(!glob_match("vm/**", "other/vm/a"));
        assert!(glob_match("**/*.log", "a.log"));
        assert!(glob_match("**/*.log", "x/y/a.log"));
        assert!(glob_match("a/**/b", "a/b"));
        assert!(glob_match("a/**/b", "a/x/y/b"));
        assert!(!glob_match("a/**/b", "a/x/y/c"));
        assert!(glob_match("f[0-9].bin", "f7.bin"));
        assert!(!glob_match("f[0-9].bin", "fx.bin"));
        assert!(glob_match("f[!0-9].bin", "fx.bin"));
        assert!(glob_match("f[abc]", "fb"));
        assert!(!glob_match("f[abc]", "fd"));
        // Case-sensitive.
        assert!(!glob_match("*.ISO", "a.iso"));
        assert!(!glob_match("Media/", "media/a"));
    }

    #[test]
    fn trailing_slash_is_a_subtree() {
        assert!(glob_match("media/", "media/a.mkv"));
        assert!(glob_match("media/", "media/x/y.mkv"));
        assert!(!glob_match("media/", "mediax/a"));
        assert!(!glob_match("media/", "other/media/a"));
        assert!(glob_match("/media/", "media/a"));
        assert!(glob_match("m*/", "music/a"));
    }

    #[test]
    fn validation_and_prefixes() {
        assert!(validate("vm/**").is_ok());
        assert!(validate("").is_err());
        assert!(validate("/").is_err());
        assert!(validate("a[bc").is_err());
        assert!(validate("a[b/c]").is_err());
        assert_eq!(literal_prefix_len("media/keep/"), 11);
        assert_eq!(literal_prefix_len("media/"), 6);
        assert_eq!(literal_prefix_len("vm/**"), 3);
        assert_eq!(literal_prefix_len("*.iso"), 0);
    }

    /// S8.6/A3: `media/` cold and `media/keep/` none: files under
    /// `media/keep/` are unpinned, other files under `media/` are pin_cold.
    #[test]
    fn a3_none_rule_cancels_broader_rules_for_its_subtree() {
        let rules = vec![
            rule(1, "media/", PolicyPin::PinCold),
            rule(2, "media/keep/", PolicyPin::None),
        ];
        assert_eq!(
            desired(&rules, "media/a.mkv"),
            Some((PolicyPin::PinCold, false))
        );
        assert_eq!(
            desired(&rules, "media/sub/b.mkv"),
            Some((PolicyPin::PinCold, false))
        );
        assert_eq!(desired(&rules, "media/keep/c.mkv"), None);
        assert_eq!(desired(&rules, "media/keep/deep/d.mkv"), None);
        assert_eq!(desired(&rules, "other/e"), None);
        // Order of creation does not matter for a longer prefix.
        let rules = vec![
            rule(1, "media/keep/", PolicyPin::None),
            rule(2, "media/", PolicyPin::PinCold),
        ];
        assert_eq!(desired(&rules, "media/keep/c.mkv"), None);
        assert_eq!(
            desired(&rules, "media/a.mkv"),
            Some((PolicyPin::PinCold, false))
        );
    }

    #[test]
    fn equal_prefixes_newest_wins() {
        let rules = vec![
            rule(1, "vm/*.img", PolicyPin::PinCold),
            rule(2, "vm/**", PolicyPin::PinHot),
        ];
        assert_eq!(
            desired(&rules, "vm/a.img"),
            Some((PolicyPin::PinHot, false))
        );
        let rules = vec![
            rule(3, "vm/**", PolicyPin::PinHot),
            rule(4, "vm/*.img", PolicyPin::PinCold),
        ];
        assert_eq!(
            desired(&rules, "vm/a.img"),
            Some((PolicyPin::PinCold, false))
        );
        assert_eq!(
            desired(&rules, "vm/a.raw"),
            Some((PolicyPin::PinHot, false))
        );
    }

    #[test]
    fn mediated_rules_set_the_flag_even_without_a_pin() {
        let mut r = rule(1, "db/*.sqlite", PolicyPin::None);
        r.mediated = true;
        let rules = vec![r];
        assert_eq!(
            desired(&rules, "db/a.sqlite"),
            Some((PolicyPin::None, true))
        );
        assert_eq!(
            action_for(&row("db/a.sqlite", PolicyPin::None, ""), &rules),
            Some((PolicyPin::None, true, ORIGIN_RULE))
        );
        let mut done = row("db/a.sqlite", PolicyPin::None, ORIGIN_RULE);
        done.mediated = true;
        assert_eq!(action_for(&done, &rules), None);
        assert_eq!(action_for(&done, &[]), Some((PolicyPin::None, false, "")));
    }

    fn row(path: &str, pin: PolicyPin, origin: &str) -> ObjectRow {
        ObjectRow {
            object_id: [1; 16],
            namespace_id: "ns".into(),
            current_tier_id: "t0".into(),
            intended_tier_id: None,
            movement_state: MovementState::Placed,
            pin_state: pin.as_pin_state(),
            policy_pin: pin,
            pin_origin: origin.into(),
            mediated: false,
            transaction_seq: 0,
            last_committed_cutover_gen: 0,
            object_gen: 0,
            size_bytes: 0,
            mtime_ns: 0,
            failure_reason: String::new(),
            deferred_reason: String::new(),
            attempts: 0,
            next_attempt_at: None,
            ewma_value: None,
            last_heat_sample_at: None,
            last_movement_at: None,
            created_at: String::new(),
            updated_at: String::new(),
            rel_path: path.into(),
        }
    }

    #[test]
    fn explicit_pins_beat_rules_and_removed_rules_clear() {
        let rules = vec![rule(1, "vm/**", PolicyPin::PinHot)];
        // Unpinned row under the rule: set.
        assert_eq!(
            action_for(&row("vm/a", PolicyPin::None, ""), &rules),
            Some((PolicyPin::PinHot, false, ORIGIN_RULE))
        );
        // Already set by the rule: nothing.
        assert_eq!(
            action_for(&row("vm/a", PolicyPin::PinHot, "rule"), &rules),
            None
        );
        // Explicit pin: left alone, even `none`.
        assert_eq!(
            action_for(&row("vm/a", PolicyPin::PinCold, "explicit"), &rules),
            None
        );
        assert_eq!(
            action_for(&row("vm/a", PolicyPin::None, "explicit"), &rules),
            None
        );
        // A pin set outside the store counts as explicit.
        assert_eq!(
            action_for(&row("vm/a", PolicyPin::PinCold, ""), &rules),
            None
        );
        // Outside every rule, a rule pin is cleared; others stay.
        assert_eq!(
            action_for(&row("x/a", PolicyPin::PinHot, "rule"), &rules),
            Some((PolicyPin::None, false, ""))
        );
        assert_eq!(action_for(&row("x/a", PolicyPin::None, ""), &rules), None);
        assert_eq!(
            action_for(&row("vm/a", PolicyPin::PinHot, "rule"), &[]),
            Some((PolicyPin::None, false, ""))
        );
    }
}
