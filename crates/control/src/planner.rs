//! The planner (SPEC S22.3–S22.6): one pure pass over a pool's tiers and
//! object rows that decides, for every object, whether it moves this tick
//! and why (or why not).
//!
//! Owns: the per-tier percentiles and gates with hysteresis, room and the
//! projected fill recomputed as plans are emitted, promotion (skipping
//! ranks) with swaps, hard and soft pressure with fill hysteresis, pins,
//! idle demotion, residency and cooldown, tier states, evacuation moves,
//! the per-tick limits and the order of the plan list, and the reason code
//! of every decision (the dry run prints exactly these). Must never: touch
//! the store, the clock or a socket (everything comes in through
//! [`PlanInput`], so a dry run and a tick give the same answer), give an
//! object more than one plan per tick, or plan an object whose move is
//! already queued or running.
//!
//! Cost: one sort per tier of (heat, OID) keys and one sort of the
//! promotion candidates; no allocation per object beyond the output
//! vectors. A pass over 1,000,000 objects takes well under a second in a
//! release build (see [`plan_synthetic`], timed by `bench/`).

use std::fmt;

use smoothfs_uapi::codec::MOVE_PLAN_RESERVE_BYTES;

/// Room the planner keeps free beyond the move reserve. Free space is
/// measured at the tick and checked again by W6 and MOVE_PLAN when each
/// move starts; in between the tier's own metadata grows (the placement
/// journal on the meta tier gains a few records per move: about 1.6 MiB
/// over a tick of 2,000 moves), and a move planned to the last byte of the
/// reserve was refused for lack of a few KiB and waited out the retry
/// schedule.
pub const PLAN_SLACK_BYTES: u64 = 8 << 20;
use smoothfs_uapi::ids::{MovementState, PinState, PolicyPin};

use crate::config::PolicyConfig;
use crate::store::Timestamp;

// ---------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------

/// One tier as the planner sees it (S22.3/2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierInput {
    pub rank: u8,
    /// Capacity: `f_blocks × f_frsize` of the lower filesystem.
    pub size_bytes: u64,
    /// Used bytes: `(f_blocks − f_bavail) × f_frsize`. `None` = never
    /// measured: the tier is treated as full, so nothing moves into it
    /// (it is not, however, put under pressure on no evidence).
    pub used_bytes: Option<u64>,
    pub target_fill_pct: u8,
    pub full_threshold_pct: u8,
    pub faulted: bool,
    pub down: bool,
    /// Not metadata-active (S2.2): heat-driven moves leave it alone.
    pub inactive: bool,
    /// In `create_disabled_tier_mask` (S24): nothing moves into it.
    pub create_disabled: bool,
}

impl TierInput {
    /// A healthy tier with the default thresholds (90 %, 98 %).
    pub fn new(rank: u8, size_bytes: u64, used_bytes: Option<u64>) -> TierInput {
        TierInput {
            rank,
            size_bytes,
            used_bytes,
            target_fill_pct: 90,
            full_threshold_pct: 98,
            faulted: false,
            down: false,
            inactive: false,
            create_disabled: false,
        }
    }
}

/// A reason the worker found for not moving an object, remembered while
/// its refusal backoff runs (S9.3/4) so the dry run can say `blocked:…`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Blocker {
    PinLun,
    PinLease,
    Hardlinks,
    PassthroughOpen,
    RangeStaged,
    NotRegular,
}

impl Blocker {
    pub fn reason(self) -> Reason {
        match self {
            Blocker::PinLun => Reason::BlockedPinLun,
            Blocker::PinLease => Reason::BlockedPinLease,
            Blocker::Hardlinks => Reason::BlockedHardlinks,
            Blocker::PassthroughOpen => Reason::BlockedPassthroughOpen,
            Blocker::RangeStaged => Reason::BlockedRangeStaged,
            Blocker::NotRegular => Reason::BlockedNotRegular,
        }
    }

    /// The blocker named by a stored `deferred_reason` (the worker's
    /// refusal text), if it names one.
    pub fn from_deferred_reason(reason: &str) -> Option<Blocker> {
        let r = reason.trim();
        if r.starts_with("lun quiesce required") {
            Some(Blocker::PinLun)
        } else if r.starts_with("lease pinned") {
            Some(Blocker::PinLease)
        } else if r.contains("hard-linked") {
            Some(Blocker::Hardlinks)
        } else if r.contains("passthrough handle") {
            Some(Blocker::PassthroughOpen)
        } else if r.starts_with("range staged") {
            Some(Blocker::RangeStaged)
        } else if r.starts_with("not a regular file") {
            Some(Blocker::NotRegular)
        } else {
            None
        }
    }
}

/// One object row as the planner sees it (S22.3/2).
#[derive(Clone, Debug, PartialEq)]
pub struct PlanObject {
    pub oid: [u8; 16],
    /// Rank of the current tier.
    pub tier: u8,
    /// `heat_now` (S7.2).
    pub heat: f64,
    pub size_bytes: u64,
    pub policy_pin: PolicyPin,
    /// The effective pin (S8.1/2).
    pub pin: PinState,
    pub state: MovementState,
    pub attempts: u32,
    pub next_attempt_at: Option<Timestamp>,
    /// NULL = unknown (counts as old enough).
    pub created_at: Option<Timestamp>,
    /// NULL = never moved.
    pub last_movement_at: Option<Timestamp>,
    pub last_heat_sample_at: Option<Timestamp>,
    /// A plan for it is queued or running.
    pub in_flight: bool,
    pub blocker: Option<Blocker>,
}

impl PlanObject {
    /// A `placed`, unpinned object that was never moved or sampled.
    pub fn new(oid: [u8; 16], tier: u8, heat: f64, size_bytes: u64) -> PlanObject {
        PlanObject {
            oid,
            tier,
            heat,
            size_bytes,
            policy_pin: PolicyPin::None,
            pin: PinState::None,
            state: MovementState::Placed,
            attempts: 0,
            next_attempt_at: None,
            created_at: None,
            last_movement_at: None,
            last_heat_sample_at: None,
            in_flight: false,
            blocker: None,
        }
    }

    /// The pin the rules act on: the effective pin, or the policy pin when
    /// the effective one was not filled in.
    fn pin(&self) -> PinState {
        match self.pin {
            PinState::None => self.policy_pin.as_pin_state(),
            p => p,
        }
    }
}

/// An evacuation job's part in the tick (S24.1/4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evacuation {
    /// Rank being emptied.
    pub tier: u8,
    /// `--to`: preferred destination rank.
    pub to: Option<u8>,
}

/// Everything one pass needs.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    pub tiers: &'a [TierInput],
    pub objects: &'a [PlanObject],
    pub config: &'a PolicyConfig,
    pub now: Timestamp,
    pub evacuation: Option<Evacuation>,
    /// The pool's socket is closed (S22.2/4): everything is deferred.
    pub pool_offline: bool,
}

// ---------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------

macro_rules! reasons {
    ($( $variant:ident => $code:literal, )+) => {
        /// A decision's reason code (S22.6/2).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $( $variant, )+
        }

        impl Reason {
            /// Every code, in the order S22.6/2 lists them.
            pub const ALL: &'static [Reason] = &[ $( Reason::$variant, )+ ];

            /// The code as printed by the dry run.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Reason::$variant => $code, )+
                }
            }
        }
    };
}

reasons! {
    Promote => "promote",
    PromotePinHot => "promote:pin_hot",
    DemotePressureHard => "demote:pressure-hard",
    DemotePressureSoft => "demote:pressure-soft",
    DemoteSwap => "demote:swap",
    DemotePinCold => "demote:pin_cold",
    DemoteIdle => "demote:idle",
    Evacuate => "evacuate",
    StayBelowPromoteGate => "stay:below-promote-gate",
    StayAboveDemoteGate => "stay:above-demote-gate",
    StayNoPressure => "stay:no-pressure",
    StayFastestTier => "stay:fastest-tier",
    StaySlowestTier => "stay:slowest-tier",
    DeferredMinResidency => "deferred:min-residency",
    DeferredCooldown => "deferred:cooldown",
    DeferredDestinationFull => "deferred:destination-full",
    DeferredNoSwapVictim => "deferred:no-swap-victim",
    DeferredTickLimit => "deferred:tick-limit",
    DeferredRetryBackoff => "deferred:retry-backoff",
    DeferredTierInactive => "deferred:tier-inactive",
    DeferredTierFaulted => "deferred:tier-faulted",
    DeferredPoolOffline => "deferred:pool-offline",
    BlockedPinLun => "blocked:pin_lun",
    BlockedPinLease => "blocked:pin_lease",
    BlockedHardlinks => "blocked:hardlinks",
    BlockedPassthroughOpen => "blocked:passthrough-open",
    BlockedRangeStaged => "blocked:range-staged",
    BlockedInFlight => "blocked:in-flight",
    BlockedMaxAttempts => "blocked:max-attempts",
    BlockedNotRegular => "blocked:not-regular",
}

impl Reason {
    /// The code for a string, if it is one.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == code)
    }

    /// A move reason (the plan's `reason`, S10.1/1).
    pub fn is_move(self) -> bool {
        matches!(
            self,
            Reason::Promote
                | Reason::PromotePinHot
                | Reason::DemotePressureHard
                | Reason::DemotePressureSoft
                | Reason::DemoteSwap
                | Reason::DemotePinCold
                | Reason::DemoteIdle
                | Reason::Evacuate
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to an object this tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Move { from: u8, to: u8 },
    Stay,
    Deferred,
    Blocked,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Move { .. } => "move",
            Verdict::Stay => "stay",
            Verdict::Deferred => "deferred",
            Verdict::Blocked => "blocked",
        }
    }
}

/// Which way a gate admits objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateDirection {
    /// Entering a tier from a slower one: heat ≥ gate.
    Up,
    /// Entering a tier from a faster one under soft pressure: heat ≤ gate.
    Down,
}

/// The gate a decision was checked against, with its source (S22.6/1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GateInfo {
    /// Rank of the tier being entered.
    pub tier: u8,
    pub direction: GateDirection,
    /// The percentile the quantile was taken at (D for Up, P for Down).
    pub percentile: u32,
    /// `Q_t(percentile)`; `None` when the tier holds no object.
    pub quantile: Option<f64>,
    /// The gate after hysteresis (and, for Up, the minimum promote heat);
    /// `None` = no limit.
    pub value: Option<f64>,
}

/// A tier's fill behind a decision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FillInfo {
    pub tier: u8,
    /// Measured at the start of the tick; `None` = never measured.
    pub fill_pct: Option<f64>,
    pub target_pct: u8,
    pub full_pct: u8,
}

/// The numbers behind a decision (S22.6/1).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Numbers {
    pub gate: Option<GateInfo>,
    pub fill: Option<FillInfo>,
    /// Seconds since the object arrived on its tier (`last_movement_at`
    /// or `created_at`); compare with `smoothfs_min_residency_seconds`.
    pub age_secs: Option<f64>,
    /// Seconds since its last move; compare with
    /// `smoothfs_movement_cooldown_seconds`.
    pub since_move_secs: Option<f64>,
    pub attempts: u32,
}

/// The decision for one object.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub oid: [u8; 16],
    /// Current rank.
    pub tier: u8,
    pub heat: f64,
    pub verdict: Verdict,
    pub reason: Reason,
    pub numbers: Numbers,
}

/// One emitted plan (S10.1), in emission order.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedMove {
    /// Index into [`PlanInput::objects`].
    pub index: usize,
    pub oid: [u8; 16],
    pub from: u8,
    pub to: u8,
    pub reason: Reason,
    pub size_bytes: u64,
    pub heat: f64,
    /// A swap's promotion names its victim: the room it moves into is the
    /// victim's, so it must not start before the victim's demotion ends.
    pub after: Option<[u8; 16]>,
}

/// A tier's pressure at the start of the tick (S22.4/5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pressure {
    None,
    /// At or above `target_fill_pct`.
    Soft,
    /// At or above `full_threshold_pct`.
    Hard,
}

/// Per-tier figures of the pass.
#[derive(Clone, Debug, PartialEq)]
pub struct TierSummary {
    pub rank: u8,
    pub objects: usize,
    pub fill_pct: Option<f64>,
    /// After every plan of this tick.
    pub projected_fill_pct: Option<f64>,
    pub projected_used_bytes: u64,
    pub pressure: Pressure,
    /// `Q_t(P)` and `Q_t(D)` (S22.4/1); `None` for an empty tier.
    pub promote_quantile: Option<f64>,
    pub demote_quantile: Option<f64>,
    /// Heat needed to enter from a slower tier: `max(G_up, min heat)`.
    pub promote_gate: f64,
    /// `G_down`; `None` = no limit.
    pub demote_gate: Option<f64>,
}

/// The result of one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanOutput {
    /// One per input object, in input order.
    pub decisions: Vec<Decision>,
    /// In emission order (S22.5/1).
    pub plans: Vec<PlannedMove>,
    pub tiers: Vec<TierSummary>,
}

impl PlanOutput {
    /// The decision for `oid` (linear search; for tests and single-object
    /// dry runs).
    pub fn decision(&self, oid: &[u8; 16]) -> Option<&Decision> {
        self.decisions.iter().find(|d| &d.oid == oid)
    }
}

// ---------------------------------------------------------------------------
// The pass
// ---------------------------------------------------------------------------

const ELIGIBLE: u8 = 1;
const PLANNED: u8 = 2;
const TOUCHED: u8 = 4;
/// Object on a tier the input does not list.
const NO_POS: u8 = u8::MAX;

struct Tier {
    rank: u8,
    size: u64,
    measured: Option<u64>,
    /// Projected used bytes: measured (or the size when never measured),
    /// updated with every plan.
    proj: u64,
    target: u8,
    full: u8,
    /// Free bytes a move into it must leave: the worker's W6 reserve, and
    /// at least the data plane's MOVE_PLAN gate 15.
    reserve: u64,
    unusable: bool,
    inactive: bool,
    closed: bool,
    pressure: Pressure,
    /// Object indices, heat ascending, OID ascending on ties.
    sorted: Vec<u32>,
    q_promote: Option<f64>,
    q_demote: Option<f64>,
    /// max(G_up, min_promote_heat).
    g_up: f64,
    /// G_down, +∞ for an empty tier.
    g_down: f64,
    /// Swap-victim scan start: entries before it can never be victims
    /// this tick.
    victim_cursor: usize,
}

impl Tier {
    fn pct(&self, used: u64) -> Option<f64> {
        (self.size > 0).then(|| used as f64 * 100.0 / self.size as f64)
    }

    fn fill(&self) -> FillInfo {
        FillInfo {
            tier: self.rank,
            fill_pct: self.measured.and_then(|u| self.pct(u)),
            target_pct: self.target,
            full_pct: self.full,
        }
    }

    /// `used` bytes at or below `pct` % of the size.
    fn at_or_below(&self, used: u64, pct: u32) -> bool {
        u128::from(used) * 100 <= u128::from(pct) * u128::from(self.size)
    }

    /// `used` bytes at or above `pct` % of the size.
    fn at_or_above(&self, used: u64, pct: u8) -> bool {
        u128::from(used) * 100 >= u128::from(pct) * u128::from(self.size)
    }

    /// Room for `size` more bytes, `credit` bytes leaving at the same time
    /// (S22.4/3), with `reserve` bytes still free afterwards: W6 and the
    /// data plane's MOVE_PLAN gate refuse a move that leaves less, and a
    /// plan the worker must refuse only costs a retry backoff.
    fn room(&self, size: u64, credit: u64) -> bool {
        if self.size == 0 {
            return false;
        }
        let after = (u128::from(self.proj) + u128::from(size)).saturating_sub(u128::from(credit));
        let cap = u128::from(self.size);
        // Filling free room keeps the planning slack too; an exchange that
        // does not grow the tier (a swap) needs only what MOVE_PLAN checks,
        // or a tier whose metadata ate into the slack could never swap.
        let reserve = if credit >= size {
            self.reserve
        } else {
            self.reserve.saturating_add(PLAN_SLACK_BYTES)
        };
        after * 100 <= u128::from(self.target) * cap
            && after * 100 < u128::from(self.full) * cap
            && cap.saturating_sub(after) >= u128::from(reserve)
    }
}

struct Budget {
    max_moves: usize,
    max_bytes: u64,
    moves: usize,
    bytes: u64,
    exhausted: bool,
}

impl Budget {
    /// Take `n` plans of `bytes` in total, or mark the tick exhausted. The
    /// first plan of a tick is allowed past the byte limit, so an object
    /// larger than the limit still moves.
    fn take(&mut self, n: usize, bytes: u64) -> bool {
        if self.exhausted {
            return false;
        }
        let over_moves = self.moves + n > self.max_moves;
        let over_bytes = self.max_bytes > 0
            && self.moves > 0
            && self.bytes.saturating_add(bytes) > self.max_bytes;
        if over_moves || over_bytes {
            self.exhausted = true;
            return false;
        }
        self.moves += n;
        self.bytes = self.bytes.saturating_add(bytes);
        true
    }
}

/// Heat as a sort key that orders like the float (NaN counts as 0).
fn heat_key(h: f64) -> u64 {
    let h = if h.is_nan() { 0.0 } else { h + 0.0 };
    let b = h.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

fn clean_heat(h: f64) -> f64 {
    if h.is_nan() { 0.0 } else { h }
}

fn oid_hi(oid: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&oid[..8]);
    u64::from_be_bytes(b)
}

/// `idx(n, p)` of S22.4/1.
fn percentile_index(n: usize, p: u32) -> usize {
    ((n as u128 * u128::from(p)) / 100).min(n as u128 - 1) as usize
}

struct Planner<'a> {
    objs: &'a [PlanObject],
    cfg: &'a PolicyConfig,
    now: Timestamp,
    tiers: Vec<Tier>,
    /// Tier position per object (index into `tiers`), or [`NO_POS`].
    pos: Vec<u8>,
    flags: Vec<u8>,
    decisions: Vec<Decision>,
    plans: Vec<PlannedMove>,
    budget: Budget,
}

/// Run one planning pass (S22.3–S22.5).
pub fn plan(input: &PlanInput<'_>) -> PlanOutput {
    let mut p = Planner::new(input);
    if !input.pool_offline && p.tiers.len() >= 2 {
        if let Some(ev) = input.evacuation {
            p.mark_evacuating(ev);
        }
        p.hard_pressure();
        if let Some(ev) = input.evacuation {
            p.evacuate(ev);
        }
        p.pin_moves();
        p.promotions();
        p.soft_pressure();
        p.idle_demotions();
    }
    p.finish()
}

impl<'a> Planner<'a> {
    fn new(input: &PlanInput<'a>) -> Planner<'a> {
        let cfg = input.config;
        let objs = input.objects;
        let now = input.now;
        let mut order: Vec<&TierInput> = input.tiers.iter().collect();
        order.sort_by_key(|t| t.rank);
        order.dedup_by_key(|t| t.rank);
        let mut pos_of = [NO_POS; 256];
        for (i, t) in order.iter().enumerate() {
            pos_of[usize::from(t.rank)] = i as u8;
        }
        let mut tiers: Vec<Tier> = order
            .iter()
            .map(|t| {
                let used = t.used_bytes.unwrap_or(t.size_bytes);
                let mut tier = Tier {
                    rank: t.rank,
                    size: t.size_bytes,
                    measured: t.used_bytes,
                    proj: used,
                    target: t.target_fill_pct.min(100),
                    full: t.full_threshold_pct.min(100),
                    reserve: cfg.move_reserve_bytes.max(MOVE_PLAN_RESERVE_BYTES),
                    unusable: t.faulted || t.down,
                    inactive: t.inactive,
                    closed: t.create_disabled,
                    pressure: Pressure::None,
                    sorted: Vec::new(),
                    q_promote: None,
                    q_demote: None,
                    g_up: 0.0,
                    g_down: f64::INFINITY,
                    victim_cursor: 0,
                };
                if let (Some(u), true) = (t.used_bytes, t.size_bytes > 0) {
                    tier.pressure = if tier.at_or_above(u, tier.full) {
                        Pressure::Hard
                    } else if tier.at_or_above(u, tier.target) {
                        Pressure::Soft
                    } else {
                        Pressure::None
                    };
                }
                tier
            })
            .collect();

        // Bucket objects by tier, then sort each bucket once.
        let pos: Vec<u8> = objs.iter().map(|o| pos_of[usize::from(o.tier)]).collect();
        let mut counts = vec![0usize; tiers.len()];
        for &p in &pos {
            if p != NO_POS {
                counts[usize::from(p)] += 1;
            }
        }
        let mut keys: Vec<Vec<(u64, u64, u32)>> =
            counts.iter().map(|&c| Vec::with_capacity(c)).collect();
        for (i, o) in objs.iter().enumerate() {
            if pos[i] != NO_POS {
                keys[usize::from(pos[i])].push((heat_key(o.heat), oid_hi(&o.oid), i as u32));
            }
        }
        let h = f64::from(cfg.hysteresis_pct.min(100)) / 100.0;
        for (t, mut k) in tiers.iter_mut().zip(keys) {
            k.sort_unstable_by(|a, b| {
                (a.0, a.1)
                    .cmp(&(b.0, b.1))
                    .then_with(|| objs[a.2 as usize].oid.cmp(&objs[b.2 as usize].oid))
            });
            t.sorted = k.into_iter().map(|(_, _, i)| i).collect();
            let n = t.sorted.len();
            let heat_at = |k: usize| clean_heat(objs[t.sorted[k] as usize].heat);
            if n > 0 {
                let mut ip = percentile_index(n, cfg.promote_percentile);
                if ip == n - 1 && n > 1 {
                    ip = n - 2;
                }
                let mut id = percentile_index(n, cfg.demote_percentile);
                if id == 0 && n > 1 {
                    id = 1;
                }
                t.q_promote = Some(heat_at(ip));
                t.q_demote = Some(heat_at(id));
            }
            let g_up = t.q_demote.map_or(0.0, |q| q * (1.0 + h));
            t.g_up = g_up.max(cfg.min_promote_heat);
            t.g_down = t.q_promote.map_or(f64::INFINITY, |q| q * (1.0 - h));
        }

        let mut p = Planner {
            objs,
            cfg,
            now,
            tiers,
            pos,
            flags: vec![0; objs.len()],
            decisions: Vec::with_capacity(objs.len()),
            plans: Vec::new(),
            budget: Budget {
                max_moves: cfg.max_moves_per_tick.max(1) as usize,
                max_bytes: cfg.max_bytes_per_tick,
                moves: 0,
                bytes: 0,
                exhausted: false,
            },
        };
        for (i, o) in objs.iter().enumerate() {
            let (verdict, reason, eligible) = p.classify(i, input.pool_offline);
            let arrived = o.last_movement_at.or(o.created_at);
            p.decisions.push(Decision {
                oid: o.oid,
                tier: o.tier,
                heat: clean_heat(o.heat),
                verdict,
                reason,
                numbers: Numbers {
                    gate: None,
                    fill: (p.pos[i] != NO_POS).then(|| p.tiers[usize::from(p.pos[i])].fill()),
                    age_secs: arrived.map(|t| now.secs_since(t)),
                    since_move_secs: o.last_movement_at.map(|t| now.secs_since(t)),
                    attempts: o.attempts,
                },
            });
            if eligible {
                p.flags[i] = ELIGIBLE;
            }
        }
        p
    }

    /// Verdicts that no rule can change (S22.3/2, S22.4/6, S22.4/9, S9.5).
    fn classify(&self, i: usize, offline: bool) -> (Verdict, Reason, bool) {
        let o = &self.objs[i];
        let deferred = |r| (Verdict::Deferred, r, false);
        let blocked = |r| (Verdict::Blocked, r, false);
        if offline {
            return deferred(Reason::DeferredPoolOffline);
        }
        if self.pos[i] == NO_POS {
            return deferred(Reason::DeferredTierFaulted);
        }
        if o.in_flight || !matches!(o.state, MovementState::Placed | MovementState::Failed) {
            return blocked(Reason::BlockedInFlight);
        }
        match o.pin {
            PinState::PinLun => return blocked(Reason::BlockedPinLun),
            PinState::PinLease => return blocked(Reason::BlockedPinLease),
            PinState::PinHardlink => return blocked(Reason::BlockedHardlinks),
            _ => {}
        }
        if let Some(b) = o.blocker {
            return blocked(b.reason());
        }
        if o.state == MovementState::Failed && self.cfg.attempts_exhausted(o.attempts) {
            return blocked(Reason::BlockedMaxAttempts);
        }
        if o.next_attempt_at.is_some_and(|t| t > self.now) {
            return deferred(Reason::DeferredRetryBackoff);
        }
        if self.tiers[usize::from(self.pos[i])].unusable {
            return deferred(Reason::DeferredTierFaulted);
        }
        if self.tiers.len() < 2 {
            return (Verdict::Stay, Reason::StayFastestTier, false);
        }
        (Verdict::Stay, Reason::StayFastestTier, true)
    }

    // -- helpers -------------------------------------------------------------

    fn free(&self, i: usize) -> bool {
        self.flags[i] & (ELIGIBLE | PLANNED) == ELIGIBLE
    }

    fn heat(&self, i: usize) -> f64 {
        clean_heat(self.objs[i].heat)
    }

    fn size(&self, i: usize) -> u64 {
        self.objs[i].size_bytes
    }

    fn tier_of(&self, i: usize) -> usize {
        usize::from(self.pos[i])
    }

    fn set(&mut self, i: usize, verdict: Verdict, reason: Reason) {
        let d = &mut self.decisions[i];
        d.verdict = verdict;
        d.reason = reason;
        self.flags[i] |= TOUCHED;
    }

    fn defer(&mut self, i: usize, reason: Reason) {
        self.set(i, Verdict::Deferred, reason);
    }

    fn note_fill(&mut self, i: usize, t: usize) {
        self.decisions[i].numbers.fill = Some(self.tiers[t].fill());
    }

    fn note_gate(&mut self, i: usize, t: usize, direction: GateDirection) {
        let tier = &self.tiers[t];
        self.decisions[i].numbers.gate = Some(match direction {
            GateDirection::Up => GateInfo {
                tier: tier.rank,
                direction,
                percentile: self.cfg.demote_percentile,
                quantile: tier.q_demote,
                value: Some(tier.g_up),
            },
            GateDirection::Down => GateInfo {
                tier: tier.rank,
                direction,
                percentile: self.cfg.promote_percentile,
                quantile: tier.q_promote,
                value: tier.g_down.is_finite().then_some(tier.g_down),
            },
        });
    }

    /// Residency and cooldown for heat-driven moves (S22.4/8).
    fn timing(&self, i: usize) -> Option<Reason> {
        let o = &self.objs[i];
        if let Some(arrived) = o.last_movement_at.or(o.created_at)
            && self.now.secs_since(arrived) < self.cfg.min_residency_seconds as f64
        {
            return Some(Reason::DeferredMinResidency);
        }
        if let Some(moved) = o.last_movement_at
            && self.now.secs_since(moved) < self.cfg.movement_cooldown_seconds as f64
        {
            return Some(Reason::DeferredCooldown);
        }
        None
    }

    /// Whether `size` bytes may move into tier `d` now.
    fn dest_ok(
        &self,
        d: usize,
        size: u64,
        credit: u64,
        allow_inactive: bool,
    ) -> Result<(), Reason> {
        let t = &self.tiers[d];
        if t.unusable {
            Err(Reason::DeferredTierFaulted)
        } else if t.closed || (t.inactive && !allow_inactive) {
            Err(Reason::DeferredTierInactive)
        } else if !t.room(size, credit) {
            Err(Reason::DeferredDestinationFull)
        } else {
            Ok(())
        }
    }

    /// The first tier of `order` that takes `size` bytes, or the obstacle
    /// met at the first tier tried.
    fn first_dest(
        &self,
        order: impl Iterator<Item = usize>,
        size: u64,
        allow_inactive: bool,
    ) -> Result<usize, Reason> {
        let mut obstacle = None;
        for d in order {
            match self.dest_ok(d, size, 0, allow_inactive) {
                Ok(()) => return Ok(d),
                Err(r) => {
                    obstacle.get_or_insert(r);
                }
            }
        }
        Err(obstacle.unwrap_or(Reason::DeferredDestinationFull))
    }

    fn emit(&mut self, i: usize, to: usize, reason: Reason) {
        let from = self.tier_of(i);
        let size = self.size(i);
        self.tiers[from].proj = self.tiers[from].proj.saturating_sub(size);
        self.tiers[to].proj = self.tiers[to].proj.saturating_add(size);
        let (from_rank, to_rank) = (self.tiers[from].rank, self.tiers[to].rank);
        self.plans.push(PlannedMove {
            index: i,
            oid: self.objs[i].oid,
            from: from_rank,
            to: to_rank,
            reason,
            size_bytes: size,
            heat: self.heat(i),
            after: None,
        });
        self.set(
            i,
            Verdict::Move {
                from: from_rank,
                to: to_rank,
            },
            reason,
        );
        self.flags[i] |= PLANNED;
    }

    /// Emit a single plan if the tick allows it, else defer with
    /// `tick-limit`. Returns whether it was emitted.
    fn emit_one(&mut self, i: usize, to: usize, reason: Reason) -> bool {
        if self.budget.take(1, self.size(i)) {
            self.emit(i, to, reason);
            true
        } else {
            self.defer(i, Reason::DeferredTickLimit);
            false
        }
    }

    /// Whether tier `t` has shed enough: projected use, less `pending`
    /// bytes of candidates only the tick limit held back, at or below
    /// `target − fill hysteresis` (S22.4/5).
    fn relieved(&self, t: usize, pending: u64) -> bool {
        let tier = &self.tiers[t];
        let low = u32::from(tier.target).saturating_sub(self.cfg.fill_hysteresis_pct);
        tier.at_or_below(tier.proj.saturating_sub(pending), low)
    }

    fn mark_evacuating(&mut self, ev: Evacuation) {
        if let Some(t) = self.tiers.iter_mut().find(|t| t.rank == ev.tier) {
            t.closed = true;
        }
    }

    // -- phases (S22.5/1 order) ------------------------------------------------

    /// Hard pressure (S22.4/5): every demotable object qualifies, residency
    /// and cooldown are ignored, inactive tiers may be woken.
    fn hard_pressure(&mut self) {
        let n = self.tiers.len();
        for t in 0..n - 1 {
            if self.tiers[t].pressure != Pressure::Hard || self.tiers[t].unusable {
                continue;
            }
            let sorted = std::mem::take(&mut self.tiers[t].sorted);
            let mut pending = 0u64;
            for &i in &sorted {
                let i = i as usize;
                if self.relieved(t, pending) {
                    break;
                }
                if !self.free(i) || self.objs[i].pin() == PinState::PinHot {
                    continue;
                }
                self.note_fill(i, t);
                match self.first_dest(t + 1..n, self.size(i), true) {
                    Ok(d) => {
                        if !self.emit_one(i, d, Reason::DemotePressureHard) {
                            pending += self.size(i);
                        }
                    }
                    Err(r) => self.defer(i, r),
                }
            }
            self.tiers[t].sorted = sorted;
        }
    }

    /// Evacuation moves (S24.1/4): gates, residency, cooldown and hot/cold
    /// pins are overridden.
    fn evacuate(&mut self, ev: Evacuation) {
        let Some(e) = self.tiers.iter().position(|t| t.rank == ev.tier) else {
            return;
        };
        if self.tiers[e].unusable {
            return;
        }
        let n = self.tiers.len();
        let to = ev
            .to
            .and_then(|r| self.tiers.iter().position(|t| t.rank == r))
            .filter(|&d| d != e);
        let sorted = std::mem::take(&mut self.tiers[e].sorted);
        for &i in &sorted {
            let i = i as usize;
            if !self.free(i) {
                continue;
            }
            self.note_fill(i, e);
            let order = to.into_iter().chain(e + 1..n).chain((0..e).rev());
            match self.first_dest(order, self.size(i), true) {
                Ok(d) => {
                    self.emit_one(i, d, Reason::Evacuate);
                }
                Err(r) => self.defer(i, r),
            }
        }
        self.tiers[e].sorted = sorted;
    }

    /// Pin moves (S22.4/6): `pin_cold` toward the last rank, then
    /// `pin_hot` toward rank 0 (hottest first), ignoring gates, residency
    /// and cooldown.
    fn pin_moves(&mut self) {
        let n = self.tiers.len();
        for t in 0..n - 1 {
            let sorted = std::mem::take(&mut self.tiers[t].sorted);
            for &i in &sorted {
                let i = i as usize;
                if !self.free(i) || self.objs[i].pin() != PinState::PinCold {
                    continue;
                }
                self.note_fill(i, t);
                match self.first_dest((t + 1..n).rev(), self.size(i), true) {
                    Ok(d) => {
                        self.emit_one(i, d, Reason::DemotePinCold);
                    }
                    Err(r) => self.defer(i, r),
                }
            }
            self.tiers[t].sorted = sorted;
        }

        let mut hot: Vec<(u64, u64, u32)> = Vec::new();
        for t in 1..n {
            for &i in &self.tiers[t].sorted {
                let o = &self.objs[i as usize];
                if self.free(i as usize) && o.pin() == PinState::PinHot {
                    hot.push((heat_key(o.heat), oid_hi(&o.oid), i));
                }
            }
        }
        self.sort_hottest_first(&mut hot);
        for &(_, _, i) in &hot {
            let i = i as usize;
            if self.budget.exhausted {
                self.defer(i, Reason::DeferredTickLimit);
                continue;
            }
            let s = self.tier_of(i);
            match self.first_dest(0..s, self.size(i), true) {
                Ok(d) => {
                    self.note_fill(i, d);
                    self.emit_one(i, d, Reason::PromotePinHot);
                }
                Err(_) => {
                    self.note_fill(i, s - 1);
                    self.swap(i, false, Reason::PromotePinHot);
                }
            }
        }
    }

    /// Heat-driven promotions (S22.4/2, /4, /8), hottest first, each with
    /// its swap demotion emitted just before it.
    fn promotions(&mut self) {
        let n = self.tiers.len();
        let mut cands: Vec<(u64, u64, u32)> = Vec::new();
        for s in 1..n {
            let gate = self.tiers[s - 1].g_up;
            let sorted = std::mem::take(&mut self.tiers[s].sorted);
            for &i in sorted.iter().rev() {
                let i = i as usize;
                if self.heat(i) < gate {
                    break;
                }
                if !self.free(i) || self.objs[i].pin() != PinState::None {
                    continue;
                }
                self.note_gate(i, s - 1, GateDirection::Up);
                self.note_fill(i, s - 1);
                if self.tiers[s].inactive {
                    self.defer(i, Reason::DeferredTierInactive);
                } else if let Some(r) = self.timing(i) {
                    self.defer(i, r);
                } else {
                    let o = &self.objs[i];
                    cands.push((heat_key(o.heat), oid_hi(&o.oid), i as u32));
                }
            }
            self.tiers[s].sorted = sorted;
        }
        self.sort_hottest_first(&mut cands);
        for &(_, _, i) in &cands {
            let i = i as usize;
            if self.budget.exhausted {
                self.defer(i, Reason::DeferredTickLimit);
                continue;
            }
            let s = self.tier_of(i);
            let heat = self.heat(i);
            let gates_passed = (0..s).filter(|&d| heat >= self.tiers[d].g_up);
            match self.first_dest(gates_passed, self.size(i), false) {
                Ok(d) => {
                    self.note_gate(i, d, GateDirection::Up);
                    self.note_fill(i, d);
                    self.emit_one(i, d, Reason::Promote);
                }
                Err(_) => self.swap(i, true, Reason::Promote),
            }
        }
    }

    /// A swap at tier s−1 for candidate `c` on tier s (S22.4/4, /6): the
    /// coldest eligible unpinned object V there (with `heat(V) × (1 + h)
    /// ≤ heat(c)` when `hysteresis`) goes to s or the nearest slower tier
    /// with room, and c takes its place.
    fn swap(&mut self, c: usize, hysteresis: bool, reason: Reason) {
        let s = self.tier_of(c);
        let at = s - 1;
        let allow_inactive = !hysteresis;
        let tier = &self.tiers[at];
        let blocked = if tier.unusable {
            Some(Reason::DeferredTierFaulted)
        } else if tier.closed || (tier.inactive && !allow_inactive) {
            Some(Reason::DeferredTierInactive)
        } else if tier.at_or_above(tier.proj, tier.target) {
            // A tier at or over its target sheds objects; swapping into it
            // would fight that (S22.6/A2).
            Some(Reason::DeferredDestinationFull)
        } else {
            None
        };
        if let Some(r) = blocked {
            self.defer(c, r);
            return;
        }
        let h = f64::from(self.cfg.hysteresis_pct.min(100)) / 100.0;
        let c_heat = self.heat(c);
        let c_size = self.size(c);
        let n = self.tiers.len();
        let sorted = std::mem::take(&mut self.tiers[at].sorted);
        let mut found = None;
        let mut k = self.tiers[at].victim_cursor;
        while k < sorted.len() {
            let v = sorted[k] as usize;
            let never =
                !self.free(v) || self.objs[v].pin() != PinState::None || self.timing(v).is_some();
            if never {
                if k == self.tiers[at].victim_cursor {
                    self.tiers[at].victim_cursor += 1;
                }
                k += 1;
                continue;
            }
            if hysteresis && self.heat(v) * (1.0 + h) > c_heat {
                break;
            }
            k += 1;
            let v_size = self.size(v);
            if !self.tiers[at].room(c_size, v_size) {
                continue;
            }
            let dest = (s..n).find(|&d| {
                let credit = if d == s { c_size } else { 0 };
                self.dest_ok(d, v_size, credit, allow_inactive).is_ok()
            });
            if let Some(vd) = dest {
                found = Some((v, vd));
                break;
            }
        }
        self.tiers[at].sorted = sorted;
        match found {
            None => self.defer(c, Reason::DeferredNoSwapVictim),
            Some((v, vd)) => {
                if self.budget.take(2, c_size.saturating_add(self.size(v))) {
                    self.note_fill(v, at);
                    self.note_gate(v, vd, GateDirection::Down);
                    self.emit(v, vd, Reason::DemoteSwap);
                    self.emit(c, at, reason);
                    if let Some(p) = self.plans.last_mut() {
                        p.after = Some(self.objs[v].oid);
                    }
                } else {
                    self.defer(c, Reason::DeferredTickLimit);
                }
            }
        }
    }

    /// Soft pressure (S22.4/5): coldest first, only objects passing the
    /// destination's `G_down`, residency and cooldown apply.
    fn soft_pressure(&mut self) {
        let n = self.tiers.len();
        for t in 0..n - 1 {
            if self.tiers[t].pressure != Pressure::Soft || self.tiers[t].unusable {
                continue;
            }
            let sorted = std::mem::take(&mut self.tiers[t].sorted);
            let mut pending = 0u64;
            for &i in &sorted {
                let i = i as usize;
                if self.relieved(t, pending) {
                    break;
                }
                if !self.free(i) || self.objs[i].pin() != PinState::None {
                    continue;
                }
                self.note_fill(i, t);
                if self.tiers[t].inactive {
                    self.defer(i, Reason::DeferredTierInactive);
                    pending += self.size(i);
                    continue;
                }
                if let Some(r) = self.timing(i) {
                    self.defer(i, r);
                    continue;
                }
                match self.first_dest(t + 1..n, self.size(i), false) {
                    Err(r) => self.defer(i, r),
                    Ok(d) => {
                        self.note_gate(i, d, GateDirection::Down);
                        if self.heat(i) > self.tiers[d].g_down {
                            self.set(i, Verdict::Stay, Reason::StayAboveDemoteGate);
                        } else if !self.emit_one(i, d, Reason::DemotePressureSoft) {
                            pending += self.size(i);
                        }
                    }
                }
            }
            self.tiers[t].sorted = sorted;
        }
    }

    /// Idle demotion (S22.4/7): one rank down for objects neither sampled
    /// nor created within `smoothfs_demote_idle_after_seconds`.
    fn idle_demotions(&mut self) {
        let idle_after = self.cfg.demote_idle_after_seconds;
        if idle_after == 0 {
            return;
        }
        let n = self.tiers.len();
        for t in 0..n - 1 {
            if self.tiers[t].unusable {
                continue;
            }
            let sorted = std::mem::take(&mut self.tiers[t].sorted);
            for &i in &sorted {
                let i = i as usize;
                if !self.free(i) || self.objs[i].pin() != PinState::None {
                    continue;
                }
                let o = &self.objs[i];
                let idle = o
                    .last_heat_sample_at
                    .or(o.created_at)
                    .is_none_or(|since| self.now.secs_since(since) >= idle_after as f64);
                if !idle {
                    continue;
                }
                self.note_fill(i, t);
                if self.tiers[t].inactive {
                    self.defer(i, Reason::DeferredTierInactive);
                } else if let Some(r) = self.timing(i) {
                    self.defer(i, r);
                } else {
                    match self.first_dest(t + 1..t + 2, self.size(i), false) {
                        Ok(d) => {
                            self.emit_one(i, d, Reason::DemoteIdle);
                        }
                        Err(r) => self.defer(i, r),
                    }
                }
            }
            self.tiers[t].sorted = sorted;
        }
    }

    fn sort_hottest_first(&self, v: &mut [(u64, u64, u32)]) {
        let objs = self.objs;
        v.sort_unstable_by(|a, b| {
            b.0.cmp(&a.0)
                .then(a.1.cmp(&b.1))
                .then_with(|| objs[a.2 as usize].oid.cmp(&objs[b.2 as usize].oid))
        });
    }

    /// The stay reason of every eligible object no rule spoke about.
    fn finish(mut self) -> PlanOutput {
        let n = self.tiers.len();
        for i in 0..self.objs.len() {
            if self.flags[i] & (ELIGIBLE | TOUCHED) != ELIGIBLE {
                continue;
            }
            let s = self.tier_of(i);
            let pin = self.objs[i].pin();
            let pressured = self.tiers[s].pressure != Pressure::None;
            let reason = if pin == PinState::PinCold && s == n - 1 {
                Reason::StaySlowestTier
            } else if s == 0 && (pin == PinState::PinHot || !pressured) {
                Reason::StayFastestTier
            } else if pressured && s < n - 1 {
                Reason::StayNoPressure
            } else if s == n - 1 && (pressured || pin == PinState::PinCold) {
                Reason::StaySlowestTier
            } else if s == 0 {
                Reason::StayFastestTier
            } else {
                self.note_gate(i, s - 1, GateDirection::Up);
                Reason::StayBelowPromoteGate
            };
            self.set(i, Verdict::Stay, reason);
        }
        let tiers = self
            .tiers
            .iter()
            .map(|t| TierSummary {
                rank: t.rank,
                objects: t.sorted.len(),
                fill_pct: t.measured.and_then(|u| t.pct(u)),
                projected_fill_pct: t.measured.and_then(|_| t.pct(t.proj)),
                projected_used_bytes: t.proj,
                pressure: t.pressure,
                promote_quantile: t.q_promote,
                demote_quantile: t.q_demote,
                promote_gate: t.g_up,
                demote_gate: t.g_down.is_finite().then_some(t.g_down),
            })
            .collect();
        PlanOutput {
            decisions: self.decisions,
            plans: self.plans,
            tiers,
        }
    }
}

// ---------------------------------------------------------------------------
// Synthetic load (bench/, N12)
// ---------------------------------------------------------------------------

/// A deterministic pool of `n` objects over 3 tiers: 10 % on tier 0 (kept
/// at about 92 % full, so under soft pressure), 30 % on tier 1, 60 % on
/// tier 2; sizes 64 KiB–64 MiB; a skewed heat distribution with a third of
/// the objects never sampled; a few pinned, failed, refused and in-flight
/// rows.
pub fn synthetic_input(n: usize, now: Timestamp) -> (Vec<TierInput>, Vec<PlanObject>) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut used = [0u64; 3];
    let mut objects = Vec::with_capacity(n);
    for k in 0..n {
        let r = next();
        let tier = match r % 10 {
            0 => 0u8,
            1..=3 => 1,
            _ => 2,
        };
        let mut oid = [0u8; 16];
        oid[..8].copy_from_slice(&next().to_be_bytes());
        oid[8..].copy_from_slice(&(k as u64).to_be_bytes());
        let size = 64 * 1024 + (next() % (64 << 20));
        used[usize::from(tier)] += size;
        let hr = next();
        let heat = if hr % 3 == 0 {
            0.0
        } else {
            // Roughly Pareto: many lukewarm, a few very hot.
            let u = ((hr >> 11) as f64 / (1u64 << 53) as f64).max(1e-9);
            4096.0 * u.powf(-1.2)
        };
        let age = 3600 * (1 + next() % (24 * 60));
        let mut o = PlanObject::new(oid, tier, heat, size);
        o.created_at = Some(now.sub_secs(age));
        o.last_heat_sample_at = (heat > 0.0).then(|| now.sub_secs(next() % 86400));
        if r % 7 == 0 {
            o.last_movement_at = Some(now.sub_secs(next() % (age + 1)));
        }
        match (r >> 32) % 2000 {
            0 | 1 => {
                o.policy_pin = PolicyPin::PinHot;
                o.pin = PinState::PinHot;
            }
            2 | 3 => {
                o.policy_pin = PolicyPin::PinCold;
                o.pin = PinState::PinCold;
            }
            4 => o.pin = PinState::PinLease,
            5 => {
                o.state = MovementState::Failed;
                o.attempts = 2;
                o.next_attempt_at = Some(now.sub_secs(60));
            }
            6 => o.in_flight = true,
            7 => o.next_attempt_at = Some(now.add_secs(300)),
            _ => {}
        }
        objects.push(o);
    }
    let sized = |used: u64, pct: u64| (used * 100 / pct).max(1 << 30);
    let tiers = vec![
        TierInput::new(0, sized(used[0], 92), Some(used[0])),
        TierInput::new(1, sized(used[1], 60), Some(used[1])),
        TierInput::new(2, sized(used[2], 30), Some(used[2])),
    ];
    (tiers, objects)
}

/// Build [`synthetic_input`] of `n` objects and run one pass with the
/// default policy (what `bench/` times for N12's planning part).
pub fn plan_synthetic(n: usize) -> PlanOutput {
    let now = Timestamp::from_unix_secs(1_750_000_000);
    let (tiers, objects) = synthetic_input(n, now);
    let config = PolicyConfig::default();
    plan(&PlanInput {
        tiers: &tiers,
        objects: &objects,
        config: &config,
        now,
        evacuation: None,
        pool_offline: false,
    })
}
