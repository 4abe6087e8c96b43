//! The control plane's tunables: every `control_plane_config` key of SPEC
//! S29.2, its default and the values it accepts.
//!
//! Owns: parsing (key, value) string pairs from the store's
//! `control_plane_config` table (S22.1/5) and from the repeatable CLI flag
//! `--policy KEY=VALUE`, and the retry schedule arithmetic of S9.5. Must
//! never: fail because of a bad value. An unknown key, an unparsable value
//! or a value outside the accepted range is reported as a warning and the
//! default (store) or the current value (override) is kept, so a typo can
//! never stop the control plane. *(improves original: only integers > 0
//! overrode a default, so for example 0 % hysteresis could not be set.)*

use std::fmt;
use std::net::SocketAddr;

use crate::worker::IoPriority;

/// Prefix shared by every key; `--policy` accepts keys without it.
pub const KEY_PREFIX: &str = "smoothfs_";

pub const HEAT_HALFLIFE_SECONDS: &str = "smoothfs_heat_halflife_seconds";
pub const PLANNER_INTERVAL_SECONDS: &str = "smoothfs_planner_interval_seconds";
pub const MIN_RESIDENCY_SECONDS: &str = "smoothfs_min_residency_seconds";
pub const MOVEMENT_COOLDOWN_SECONDS: &str = "smoothfs_movement_cooldown_seconds";
pub const HYSTERESIS_PCT: &str = "smoothfs_hysteresis_pct";
pub const PROMOTE_PERCENTILE: &str = "smoothfs_promote_percentile";
pub const DEMOTE_PERCENTILE: &str = "smoothfs_demote_percentile";
pub const MIN_PROMOTE_HEAT: &str = "smoothfs_min_promote_heat";
pub const FILL_HYSTERESIS_PCT: &str = "smoothfs_fill_hysteresis_pct";
pub const MAX_MOVES_PER_TICK: &str = "smoothfs_max_moves_per_tick";
pub const MAX_BYTES_PER_TICK: &str = "smoothfs_max_bytes_per_tick";
pub const DEMOTE_IDLE_AFTER_SECONDS: &str = "smoothfs_demote_idle_after_seconds";
pub const WORKER_COUNT: &str = "smoothfs_worker_count";
pub const PER_TIER_MOVES: &str = "smoothfs_per_tier_moves";
pub const MOVE_BANDWIDTH_BYTES_PER_S: &str = "smoothfs_move_bandwidth_bytes_per_s";
pub const MOVE_IOPRIO: &str = "smoothfs_move_ioprio";
pub const MOVE_CHUNK_BYTES: &str = "smoothfs_move_chunk_bytes";
pub const MOVE_RESERVE_BYTES: &str = "smoothfs_move_reserve_bytes";
pub const VERIFY_READBACK: &str = "smoothfs_verify_readback";
pub const VERIFY_SOURCE_REHASH: &str = "smoothfs_verify_source_rehash";
pub const RETRY_BASE_SECONDS: &str = "smoothfs_retry_base_seconds";
pub const RETRY_MAX_SECONDS: &str = "smoothfs_retry_max_seconds";
pub const RETRY_MAX_ATTEMPTS: &str = "smoothfs_retry_max_attempts";
pub const BUSY_RETRY_SECONDS: &str = "smoothfs_busy_retry_seconds";
pub const INVENTORY_INTERVAL_SECONDS: &str = "smoothfs_inventory_interval_seconds";
pub const LOG_RETENTION_DAYS: &str = "smoothfs_log_retention_days";
pub const LUN_CONTROLLER: &str = "smoothfs_lun_controller";
pub const LUN_DRAIN_QUIET_MS: &str = "smoothfs_lun_drain_quiet_ms";
pub const METRICS_LISTEN: &str = "smoothfs_metrics_listen";

/// One key of S29.2: its name, default and accepted values as the spec
/// prints them (for `smoothfs config` and warnings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub key: &'static str,
    pub default: &'static str,
    pub accepted: &'static str,
}

/// Every key, in the order of the S29.2 table.
pub const KEYS: &[KeyInfo] = &[
    KeyInfo {
        key: HEAT_HALFLIFE_SECONDS,
        default: "86400",
        accepted: "> 0",
    },
    KeyInfo {
        key: PLANNER_INTERVAL_SECONDS,
        default: "900",
        accepted: "> 0",
    },
    KeyInfo {
        key: MIN_RESIDENCY_SECONDS,
        default: "3600",
        accepted: ">= 0",
    },
    KeyInfo {
        key: MOVEMENT_COOLDOWN_SECONDS,
        default: "21600",
        accepted: ">= 0",
    },
    KeyInfo {
        key: HYSTERESIS_PCT,
        default: "20",
        accepted: "0-100",
    },
    KeyInfo {
        key: PROMOTE_PERCENTILE,
        default: "80",
        accepted: "0-100",
    },
    KeyInfo {
        key: DEMOTE_PERCENTILE,
        default: "20",
        accepted: "0-100",
    },
    KeyInfo {
        key: MIN_PROMOTE_HEAT,
        default: "4096",
        accepted: ">= 0",
    },
    KeyInfo {
        key: FILL_HYSTERESIS_PCT,
        default: "5",
        accepted: "0-50",
    },
    KeyInfo {
        key: MAX_MOVES_PER_TICK,
        default: "256",
        accepted: ">= 1",
    },
    KeyInfo {
        key: MAX_BYTES_PER_TICK,
        default: "0",
        accepted: ">= 0 (0 = no limit)",
    },
    KeyInfo {
        key: DEMOTE_IDLE_AFTER_SECONDS,
        default: "0",
        accepted: ">= 0 (0 = off)",
    },
    KeyInfo {
        key: WORKER_COUNT,
        default: "4",
        accepted: "1-64",
    },
    KeyInfo {
        key: PER_TIER_MOVES,
        default: "2",
        accepted: ">= 1",
    },
    KeyInfo {
        key: MOVE_BANDWIDTH_BYTES_PER_S,
        default: "0",
        accepted: ">= 0 (0 = no limit)",
    },
    KeyInfo {
        key: MOVE_IOPRIO,
        default: "be7",
        accepted: "be0-be7, idle",
    },
    KeyInfo {
        key: MOVE_CHUNK_BYTES,
        default: "8388608",
        accepted: "65536-268435456",
    },
    KeyInfo {
        key: MOVE_RESERVE_BYTES,
        default: "67108864",
        accepted: ">= 0",
    },
    KeyInfo {
        key: VERIFY_READBACK,
        default: "cache",
        accepted: "cache, direct",
    },
    KeyInfo {
        key: VERIFY_SOURCE_REHASH,
        default: "true",
        accepted: "true, false",
    },
    KeyInfo {
        key: RETRY_BASE_SECONDS,
        default: "900",
        accepted: "> 0",
    },
    KeyInfo {
        key: RETRY_MAX_SECONDS,
        default: "86400",
        accepted: "> 0",
    },
    KeyInfo {
        key: RETRY_MAX_ATTEMPTS,
        default: "8",
        accepted: "> 0",
    },
    KeyInfo {
        key: BUSY_RETRY_SECONDS,
        default: "300",
        accepted: "> 0",
    },
    KeyInfo {
        key: INVENTORY_INTERVAL_SECONDS,
        default: "3600",
        accepted: "> 0",
    },
    KeyInfo {
        key: LOG_RETENTION_DAYS,
        default: "90",
        accepted: "> 0",
    },
    KeyInfo {
        key: LUN_CONTROLLER,
        default: "none",
        accepted: "none, tgt, lio, command",
    },
    KeyInfo {
        key: LUN_DRAIN_QUIET_MS,
        default: "2000",
        accepted: "> 0",
    },
    KeyInfo {
        key: METRICS_LISTEN,
        default: "127.0.0.1:9475",
        accepted: "address or empty",
    },
];

/// `smoothfs_verify_readback` (S10.4): how W8 reads the staging file back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyReadback {
    /// Through the page cache.
    Cache,
    /// With O_DIRECT, so the bytes come from the device.
    Direct,
}

impl VerifyReadback {
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyReadback::Cache => "cache",
            VerifyReadback::Direct => "direct",
        }
    }
}

/// `smoothfs_lun_controller` (S18.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LunController {
    None,
    Tgt,
    Lio,
    Command,
}

impl LunController {
    pub fn as_str(self) -> &'static str {
        match self {
            LunController::None => "none",
            LunController::Tgt => "tgt",
            LunController::Lio => "lio",
            LunController::Command => "command",
        }
    }
}

/// Why one (key, value) pair was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown key {key:?}")]
    UnknownKey { key: String },
    #[error("{key} = {value:?} is not accepted (accepted: {accepted})")]
    Invalid {
        key: &'static str,
        value: String,
        accepted: &'static str,
    },
    #[error("{arg:?} is not KEY=VALUE")]
    NotKeyValue { arg: String },
}

/// The control plane's policy: one field per S29.2 key. `Default` is the
/// spec's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// EWMA half-life (S7.1).
    pub heat_halflife_seconds: u64,
    pub planner_interval_seconds: u64,
    pub min_residency_seconds: u64,
    pub movement_cooldown_seconds: u64,
    /// `h` of S22.4.
    pub hysteresis_pct: u32,
    /// `P` of S22.4.
    pub promote_percentile: u32,
    /// `D` of S22.4.
    pub demote_percentile: u32,
    pub min_promote_heat: f64,
    pub fill_hysteresis_pct: u32,
    pub max_moves_per_tick: u32,
    /// 0 = no limit.
    pub max_bytes_per_tick: u64,
    /// 0 = idle demotion off.
    pub demote_idle_after_seconds: u64,
    pub worker_count: u32,
    pub per_tier_moves: u32,
    /// 0 = no limit.
    pub move_bandwidth_bytes_per_s: u64,
    pub move_ioprio: IoPriority,
    pub move_chunk_bytes: u64,
    pub move_reserve_bytes: u64,
    pub verify_readback: VerifyReadback,
    pub verify_source_rehash: bool,
    pub retry_base_seconds: u64,
    pub retry_max_seconds: u64,
    pub retry_max_attempts: u32,
    pub busy_retry_seconds: u64,
    pub inventory_interval_seconds: u64,
    pub log_retention_days: u64,
    pub lun_controller: LunController,
    pub lun_drain_quiet_ms: u64,
    /// Prometheus listener; empty = off.
    pub metrics_listen: String,
}

impl Default for PolicyConfig {
    fn default() -> PolicyConfig {
        PolicyConfig {
            heat_halflife_seconds: 86400,
            planner_interval_seconds: 900,
            min_residency_seconds: 3600,
            movement_cooldown_seconds: 21600,
            hysteresis_pct: 20,
            promote_percentile: 80,
            demote_percentile: 20,
            min_promote_heat: 4096.0,
            fill_hysteresis_pct: 5,
            max_moves_per_tick: 256,
            max_bytes_per_tick: 0,
            demote_idle_after_seconds: 0,
            worker_count: 4,
            per_tier_moves: 2,
            move_bandwidth_bytes_per_s: 0,
            move_ioprio: IoPriority::DEFAULT,
            move_chunk_bytes: 8 << 20,
            move_reserve_bytes: 64 << 20,
            verify_readback: VerifyReadback::Cache,
            verify_source_rehash: true,
            retry_base_seconds: 900,
            retry_max_seconds: 86400,
            retry_max_attempts: 8,
            busy_retry_seconds: 300,
            inventory_interval_seconds: 3600,
            log_retention_days: 90,
            lun_controller: LunController::None,
            lun_drain_quiet_ms: 2000,
            metrics_listen: "127.0.0.1:9475".to_string(),
        }
    }
}

/// Largest accepted duration or byte count: keeps nanosecond arithmetic
/// on [`crate::store::Timestamp`] and SQLite's signed integers exact.
const MAX_INT: i64 = i64::MAX / 1_000_000_000;

fn int_in(value: &str, min: i64, max: i64) -> Option<i64> {
    let v: i64 = value.parse().ok()?;
    (min..=max).contains(&v).then_some(v)
}

fn u64_in(value: &str, min: i64, max: i64) -> Option<u64> {
    int_in(value, min, max).map(|v| v as u64)
}

fn u32_in(value: &str, min: i64, max: i64) -> Option<u32> {
    int_in(value, min, max.min(i64::from(u32::MAX))).map(|v| v as u32)
}

/// The canonical key for `key`: as is when it is known, else with the
/// `smoothfs_` prefix added when that makes it known.
pub fn canonical_key(key: &str) -> Option<&'static str> {
    let key = key.trim();
    KEYS.iter()
        .map(|k| k.key)
        .find(|k| *k == key || k.strip_prefix(KEY_PREFIX) == Some(key))
}

/// The [`KeyInfo`] of a canonical key.
pub fn key_info(key: &str) -> Option<&'static KeyInfo> {
    let key = canonical_key(key)?;
    KEYS.iter().find(|k| k.key == key)
}

/// Split one `--policy` argument, `KEY=VALUE`.
pub fn parse_policy_arg(arg: &str) -> Result<(String, String), ConfigError> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(ConfigError::NotKeyValue {
            arg: arg.to_string(),
        }),
    }
}

impl PolicyConfig {
    /// The defaults overlaid with `pairs` (the `control_plane_config`
    /// rows). Every pair that is not applied yields one warning and leaves
    /// that key at its default (S22.1/5).
    pub fn from_pairs(pairs: &[(String, String)]) -> (PolicyConfig, Vec<String>) {
        let mut config = PolicyConfig::default();
        let mut warnings = Vec::new();
        for (key, value) in pairs {
            if let Err(e) = config.set(key, value) {
                warnings.push(match e {
                    ConfigError::Invalid { key, .. } => {
                        let default = key_info(key).map_or("", |k| k.default);
                        format!("control_plane_config: {e}; using the default {default}")
                    }
                    e => format!("control_plane_config: {e}; ignored"),
                });
            }
        }
        (config, warnings)
    }

    /// Apply `--policy KEY=VALUE` overrides on top of this configuration.
    /// Keys may omit the `smoothfs_` prefix. A pair that is not applied
    /// yields one warning and leaves the current value in place.
    pub fn apply_overrides(&mut self, pairs: &[(String, String)]) -> Vec<String> {
        let mut warnings = Vec::new();
        for (key, value) in pairs {
            if let Err(e) = self.set(key, value) {
                warnings.push(format!("--policy: {e}; keeping {}", self.current(key)));
            }
        }
        warnings
    }

    fn current(&self, key: &str) -> String {
        canonical_key(key)
            .and_then(|k| self.entries().into_iter().find(|(name, _)| *name == k))
            .map_or_else(|| "the current settings".to_string(), |(_, v)| v)
    }

    /// Set one key from its string form; on error nothing changes.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let Some(info) = key_info(key) else {
            return Err(ConfigError::UnknownKey {
                key: key.to_string(),
            });
        };
        let v = value.trim();
        let applied = match info.key {
            HEAT_HALFLIFE_SECONDS => u64_in(v, 1, MAX_INT).map(|x| self.heat_halflife_seconds = x),
            PLANNER_INTERVAL_SECONDS => {
                u64_in(v, 1, MAX_INT).map(|x| self.planner_interval_seconds = x)
            }
            MIN_RESIDENCY_SECONDS => u64_in(v, 0, MAX_INT).map(|x| self.min_residency_seconds = x),
            MOVEMENT_COOLDOWN_SECONDS => {
                u64_in(v, 0, MAX_INT).map(|x| self.movement_cooldown_seconds = x)
            }
            HYSTERESIS_PCT => u32_in(v, 0, 100).map(|x| self.hysteresis_pct = x),
            PROMOTE_PERCENTILE => u32_in(v, 0, 100).map(|x| self.promote_percentile = x),
            DEMOTE_PERCENTILE => u32_in(v, 0, 100).map(|x| self.demote_percentile = x),
            MIN_PROMOTE_HEAT => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .map(|x| self.min_promote_heat = x),
            FILL_HYSTERESIS_PCT => u32_in(v, 0, 50).map(|x| self.fill_hysteresis_pct = x),
            MAX_MOVES_PER_TICK => u32_in(v, 1, MAX_INT).map(|x| self.max_moves_per_tick = x),
            MAX_BYTES_PER_TICK => u64_in(v, 0, i64::MAX).map(|x| self.max_bytes_per_tick = x),
            DEMOTE_IDLE_AFTER_SECONDS => {
                u64_in(v, 0, MAX_INT).map(|x| self.demote_idle_after_seconds = x)
            }
            WORKER_COUNT => u32_in(v, 1, 64).map(|x| self.worker_count = x),
            PER_TIER_MOVES => u32_in(v, 1, MAX_INT).map(|x| self.per_tier_moves = x),
            MOVE_BANDWIDTH_BYTES_PER_S => {
                u64_in(v, 0, i64::MAX).map(|x| self.move_bandwidth_bytes_per_s = x)
            }
            MOVE_IOPRIO => IoPriority::parse(v).map(|x| self.move_ioprio = x),
            MOVE_CHUNK_BYTES => u64_in(v, 65536, 268435456).map(|x| self.move_chunk_bytes = x),
            MOVE_RESERVE_BYTES => u64_in(v, 0, i64::MAX).map(|x| self.move_reserve_bytes = x),
            VERIFY_READBACK => match v {
                "cache" => Some(VerifyReadback::Cache),
                "direct" => Some(VerifyReadback::Direct),
                _ => None,
            }
            .map(|x| self.verify_readback = x),
            VERIFY_SOURCE_REHASH => match v {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            }
            .map(|x| self.verify_source_rehash = x),
            RETRY_BASE_SECONDS => u64_in(v, 1, MAX_INT).map(|x| self.retry_base_seconds = x),
            RETRY_MAX_SECONDS => u64_in(v, 1, MAX_INT).map(|x| self.retry_max_seconds = x),
            RETRY_MAX_ATTEMPTS => u32_in(v, 1, MAX_INT).map(|x| self.retry_max_attempts = x),
            BUSY_RETRY_SECONDS => u64_in(v, 1, MAX_INT).map(|x| self.busy_retry_seconds = x),
            INVENTORY_INTERVAL_SECONDS => {
                u64_in(v, 1, MAX_INT).map(|x| self.inventory_interval_seconds = x)
            }
            LOG_RETENTION_DAYS => {
                u64_in(v, 1, MAX_INT / 86400).map(|x| self.log_retention_days = x)
            }
            LUN_CONTROLLER => match v {
                "none" => Some(LunController::None),
                "tgt" => Some(LunController::Tgt),
                "lio" => Some(LunController::Lio),
                "command" => Some(LunController::Command),
                _ => None,
            }
            .map(|x| self.lun_controller = x),
            LUN_DRAIN_QUIET_MS => u64_in(v, 1, MAX_INT).map(|x| self.lun_drain_quiet_ms = x),
            METRICS_LISTEN => (v.is_empty() || v.parse::<SocketAddr>().is_ok())
                .then(|| self.metrics_listen = v.to_string()),
            _ => unreachable!("KEYS and set() list the same keys"),
        };
        applied.ok_or_else(|| ConfigError::Invalid {
            key: info.key,
            value: value.to_string(),
            accepted: info.accepted,
        })
    }

    /// Every key with its current value in string form, in [`KEYS`] order
    /// (what `smoothfs config show` prints; each value parses back).
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let ioprio = match self.move_ioprio {
            IoPriority::BestEffort(level) => format!("be{level}"),
            IoPriority::Idle => "idle".to_string(),
        };
        vec![
            (
                HEAT_HALFLIFE_SECONDS,
                self.heat_halflife_seconds.to_string(),
            ),
            (
                PLANNER_INTERVAL_SECONDS,
                self.planner_interval_seconds.to_string(),
            ),
            (
                MIN_RESIDENCY_SECONDS,
                self.min_residency_seconds.to_string(),
            ),
            (
                MOVEMENT_COOLDOWN_SECONDS,
                self.movement_cooldown_seconds.to_string(),
            ),
            (HYSTERESIS_PCT, self.hysteresis_pct.to_string()),
            (PROMOTE_PERCENTILE, self.promote_percentile.to_string()),
            (DEMOTE_PERCENTILE, self.demote_percentile.to_string()),
            (MIN_PROMOTE_HEAT, self.min_promote_heat.to_string()),
            (FILL_HYSTERESIS_PCT, self.fill_hysteresis_pct.to_string()),
            (MAX_MOVES_PER_TICK, self.max_moves_per_tick.to_string()),
            (MAX_BYTES_PER_TICK, self.max_bytes_per_tick.to_string()),
            (
                DEMOTE_IDLE_AFTER_SECONDS,
                self.demote_idle_after_seconds.to_string(),
            ),
            (WORKER_COUNT, self.worker_count.to_string()),
            (PER_TIER_MOVES, self.per_tier_moves.to_string()),
            (
                MOVE_BANDWIDTH_BYTES_PER_S,
                self.move_bandwidth_bytes_per_s.to_string(),
            ),
            (MOVE_IOPRIO, ioprio),
            (MOVE_CHUNK_BYTES, self.move_chunk_bytes.to_string()),
            (MOVE_RESERVE_BYTES, self.move_reserve_bytes.to_string()),
            (VERIFY_READBACK, self.verify_readback.as_str().to_string()),
            (VERIFY_SOURCE_REHASH, self.verify_source_rehash.to_string()),
            (RETRY_BASE_SECONDS, self.retry_base_seconds.to_string()),
            (RETRY_MAX_SECONDS, self.retry_max_seconds.to_string()),
            (RETRY_MAX_ATTEMPTS, self.retry_max_attempts.to_string()),
            (BUSY_RETRY_SECONDS, self.busy_retry_seconds.to_string()),
            (
                INVENTORY_INTERVAL_SECONDS,
                self.inventory_interval_seconds.to_string(),
            ),
            (LOG_RETENTION_DAYS, self.log_retention_days.to_string()),
            (LUN_CONTROLLER, self.lun_controller.as_str().to_string()),
            (LUN_DRAIN_QUIET_MS, self.lun_drain_quiet_ms.to_string()),
            (METRICS_LISTEN, self.metrics_listen.clone()),
        ]
    }

    /// The half-life as a float (S7.1/4; the parser keeps it > 0).
    pub fn half_life_secs(&self) -> f64 {
        self.heat_halflife_seconds.max(1) as f64
    }

    /// Delay before the next attempt after the `attempts`-th consecutive
    /// failure (S9.5/1): `min(base × 2^(attempts−1), max)`; `attempts` 0
    /// counts as 1.
    pub fn retry_delay_secs(&self, attempts: u32) -> u64 {
        let doublings = attempts.max(1) - 1;
        let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
        self.retry_base_seconds
            .saturating_mul(factor)
            .min(self.retry_max_seconds)
    }

    /// Whether a row with this many failed attempts waits for an operator
    /// (S9.5/2).
    pub fn attempts_exhausted(&self, attempts: u32) -> bool {
        attempts >= self.retry_max_attempts
    }
}

impl fmt::Display for PolicyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in self.entries() {
            writeln!(f, "{key} = {value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_spec_table() {
        let c = PolicyConfig::default();
        for info in KEYS {
            let (_, value) = c
                .entries()
                .into_iter()
                .find(|(k, _)| *k == info.key)
                .unwrap();
            assert_eq!(value, info.default, "{}", info.key);
        }
        assert_eq!(c.entries().len(), KEYS.len());
    }

    #[test]
    fn every_entry_parses_back_to_the_same_config() {
        let c = PolicyConfig {
            hysteresis_pct: 0,
            move_ioprio: IoPriority::Idle,
            verify_readback: VerifyReadback::Direct,
            metrics_listen: String::new(),
            min_promote_heat: 1.5,
            ..PolicyConfig::default()
        };
        let text: Vec<(String, String)> = c
            .entries()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let (back, warnings) = PolicyConfig::from_pairs(&text);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(back, c);
    }

    #[test]
    fn zero_hysteresis_is_accepted() {
        let (c, w) = PolicyConfig::from_pairs(&pairs(&[(HYSTERESIS_PCT, "0")]));
        assert!(w.is_empty());
        assert_eq!(c.hysteresis_pct, 0);
    }

    #[test]
    fn bad_values_warn_and_keep_the_default() {
        let (c, w) = PolicyConfig::from_pairs(&pairs(&[
            (HEAT_HALFLIFE_SECONDS, "0"),
            (HYSTERESIS_PCT, "101"),
            (FILL_HYSTERESIS_PCT, "51"),
            (WORKER_COUNT, "65"),
            (MOVE_CHUNK_BYTES, "1024"),
            (MOVE_IOPRIO, "be8"),
            (VERIFY_SOURCE_REHASH, "yes"),
            (MIN_PROMOTE_HEAT, "-1"),
            (METRICS_LISTEN, "not an address"),
            (PLANNER_INTERVAL_SECONDS, "abc"),
            ("smoothfs_no_such_key", "1"),
        ]));
        assert_eq!(c, PolicyConfig::default());
        assert_eq!(w.len(), 11, "{w:#?}");
        assert!(w[0].contains(HEAT_HALFLIFE_SECONDS) && w[0].contains("86400"));
        assert!(w[10].contains("unknown key"));
    }

    #[test]
    fn overrides_accept_short_keys_and_keep_current_on_error() {
        let mut c = PolicyConfig {
            max_moves_per_tick: 10,
            ..PolicyConfig::default()
        };
        let w = c.apply_overrides(&pairs(&[
            ("max_moves_per_tick", "0"),
            ("hysteresis_pct", "5"),
            ("smoothfs_verify_readback", "direct"),
        ]));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("keeping 10"), "{w:?}");
        assert_eq!(c.max_moves_per_tick, 10);
        assert_eq!(c.hysteresis_pct, 5);
        assert_eq!(c.verify_readback, VerifyReadback::Direct);
    }

    #[test]
    fn policy_arg_splits_on_the_first_equals() {
        assert_eq!(
            parse_policy_arg("metrics_listen=").unwrap(),
            ("metrics_listen".to_string(), String::new())
        );
        assert_eq!(
            parse_policy_arg("a=b=c").unwrap(),
            ("a".to_string(), "b=c".to_string())
        );
        assert!(parse_policy_arg("novalue").is_err());
        assert!(parse_policy_arg("=1").is_err());
    }

    /// S9.5/A1.
    #[test]
    fn retry_delays_double_up_to_the_maximum() {
        let c = PolicyConfig::default();
        let delays: Vec<u64> = (1..=20).map(|a| c.retry_delay_secs(a)).collect();
        assert_eq!(&delays[..4], &[900, 1800, 3600, 7200]);
        assert_eq!(delays[19], 86400);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(c.retry_delay_secs(1000), 86400);
        assert!(!c.attempts_exhausted(7));
        assert!(c.attempts_exhausted(8));
    }
}
