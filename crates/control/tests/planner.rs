//! The planner's acceptance tests: S22.6/A1–A10 as written, plus the rules
//! of S22.4/S22.5 they do not reach (percentile exceptions, byte limit,
//! idle demotion, evacuation, tier states, retry policy, ties).
//!
//! Unless a test says otherwise (S22.6 preamble): objects are 10 MiB, older
//! than residency and cooldown, and slower tiers have room.

use smoothfs_control::config::PolicyConfig;
use smoothfs_control::planner::{
    Blocker, Evacuation, GateDirection, PlanInput, PlanObject, PlanOutput, Pressure, Reason,
    TierInput, Verdict, plan, plan_synthetic,
};
use smoothfs_control::store::Timestamp;
use smoothfs_uapi::ids::{MovementState, PinState, PolicyPin};

const MIB: u64 = 1 << 20;

fn now() -> Timestamp {
    Timestamp::from_unix_secs(1_750_000_000)
}

fn oid(n: u32) -> [u8; 16] {
    let mut o = [0u8; 16];
    o[12..].copy_from_slice(&n.to_be_bytes());
    o
}

/// A 10 MiB unpinned object created 30 days ago, never moved.
fn obj(n: u32, tier: u8, heat: f64) -> PlanObject {
    let mut o = PlanObject::new(oid(n), tier, heat, 10 * MIB);
    o.created_at = Some(now().sub_secs(30 * 86400));
    o
}

fn pinned(mut o: PlanObject, pin: PolicyPin) -> PlanObject {
    o.policy_pin = pin;
    o.pin = pin.as_pin_state();
    o
}

fn tier(rank: u8, size_mib: u64, used_mib: u64) -> TierInput {
    TierInput::new(rank, size_mib * MIB, Some(used_mib * MIB))
}

fn run_with(tiers: &[TierInput], objects: &[PlanObject], config: &PolicyConfig) -> PlanOutput {
    plan(&PlanInput {
        tiers,
        objects,
        config,
        now: now(),
        evacuation: None,
        pool_offline: false,
    })
}

fn run(tiers: &[TierInput], objects: &[PlanObject]) -> PlanOutput {
    run_with(tiers, objects, &PolicyConfig::default())
}

fn plans(out: &PlanOutput) -> Vec<(u32, u8, u8, Reason)> {
    out.plans
        .iter()
        .map(|p| {
            let n = u32::from_be_bytes(p.oid[12..].try_into().unwrap());
            (n, p.from, p.to, p.reason)
        })
        .collect()
}

fn reason_of(out: &PlanOutput, n: u32) -> Reason {
    out.decision(&oid(n)).expect("decision").reason
}

fn assert_close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-6 * b.abs().max(1.0), "{a} != {b}");
}

#[test]
fn reason_codes_are_exactly_the_spec_list() {
    let spec = "promote promote:pin_hot demote:pressure-hard demote:pressure-soft demote:swap \
                demote:pin_cold demote:idle evacuate stay:below-promote-gate \
                stay:above-demote-gate stay:no-pressure stay:fastest-tier stay:slowest-tier \
                deferred:min-residency deferred:cooldown deferred:destination-full \
                deferred:no-swap-victim deferred:tick-limit deferred:retry-backoff \
                deferred:tier-inactive deferred:tier-faulted deferred:pool-offline \
                blocked:pin_lun blocked:pin_lease blocked:hardlinks blocked:passthrough-open \
                blocked:range-staged blocked:in-flight blocked:max-attempts blocked:not-regular";
    let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(codes, spec.split_whitespace().collect::<Vec<_>>());
    for r in Reason::ALL {
        assert_eq!(Reason::from_code(r.as_str()), Some(*r));
    }
}

/// S22.6/A1: hard pressure, bounded by the fill hysteresis, despite
/// residency.
#[test]
fn a1_hard_pressure_demotes_just_enough_coldest_objects() {
    let tiers = [tier(0, 1000, 985), tier(1, 1000, 0)];
    let objects: Vec<PlanObject> = (1..=20)
        .map(|k| {
            let mut o = obj(k, 0, f64::from(k) * 1000.0);
            o.last_movement_at = Some(now());
            o
        })
        .collect();
    let out = run(&tiers, &objects);
    let expected: Vec<_> = (1..=14)
        .map(|k| (k, 0, 1, Reason::DemotePressureHard))
        .collect();
    assert_eq!(plans(&out), expected);
    assert_eq!(out.tiers[0].pressure, Pressure::Hard);
    assert_eq!(out.tiers[0].projected_used_bytes, 845 * MIB);
    for k in 15..=20 {
        assert_eq!(
            out.decision(&oid(k)).unwrap().verdict,
            Verdict::Stay,
            "object {k}"
        );
    }
}

/// S22.6/A2.
#[test]
fn a2_hot_object_waits_when_the_faster_tier_is_full() {
    let tiers = [tier(0, 1000, 985), tier(1, 1000, 100)];
    let objects = [obj(1, 1, 1e9)];
    let out = run(&tiers, &objects);
    assert!(out.plans.is_empty());
    assert_eq!(reason_of(&out, 1), Reason::DeferredDestinationFull);
    assert_eq!(out.decision(&oid(1)).unwrap().verdict, Verdict::Deferred);
}

/// S22.6/A3.
#[test]
fn a3_promotion_gate_has_hysteresis() {
    let mut objects: Vec<PlanObject> = (0..9)
        .map(|k| {
            pinned(
                obj(100 + k, 0, 100_000.0 + f64::from(k) * 10_000.0),
                PolicyPin::PinHot,
            )
        })
        .collect();
    objects.push(obj(1, 1, 120_000.0));
    let tiers = [tier(0, 1000, 90), tier(1, 1000, 10)];
    let out = run(&tiers, &objects);
    assert_eq!(out.tiers[0].demote_quantile, Some(110_000.0));
    assert_close(out.tiers[0].promote_gate, 132_000.0);
    assert!(out.plans.is_empty());
    let d = out.decision(&oid(1)).unwrap();
    assert_eq!(d.reason, Reason::StayBelowPromoteGate);
    let gate = d.numbers.gate.unwrap();
    assert_eq!(
        (gate.tier, gate.direction, gate.percentile),
        (0, GateDirection::Up, 20)
    );
    assert_eq!(gate.quantile, Some(110_000.0));
    assert_close(gate.value.unwrap(), 132_000.0);

    objects.last_mut().unwrap().heat = 140_000.0;
    let out = run(&tiers, &objects);
    assert_eq!(plans(&out), vec![(1, 1, 0, Reason::Promote)]);
}

/// S22.6/A4.
#[test]
fn a4_soft_pressure_demotion_gate_has_hysteresis() {
    let mut objects: Vec<PlanObject> = (1..=9)
        .map(|k| obj(100 + k, 1, f64::from(k) * 10_000.0))
        .collect();
    objects.push(pinned(obj(200, 0, 5_000.0), PolicyPin::PinHot));
    objects.push(obj(1, 0, 70_000.0));
    let tiers = [tier(0, 1000, 920), tier(1, 10_000, 90)];
    let out = run(&tiers, &objects);
    assert_eq!(out.tiers[0].pressure, Pressure::Soft);
    assert_eq!(out.tiers[1].promote_quantile, Some(80_000.0));
    assert_close(out.tiers[1].demote_gate.unwrap(), 64_000.0);
    assert!(out.plans.is_empty(), "{:?}", plans(&out));
    let d = out.decision(&oid(1)).unwrap();
    assert_eq!(d.reason, Reason::StayAboveDemoteGate);
    let gate = d.numbers.gate.unwrap();
    assert_eq!(
        (gate.tier, gate.direction, gate.percentile),
        (1, GateDirection::Down, 80)
    );

    objects.last_mut().unwrap().heat = 60_000.0;
    let out = run(&tiers, &objects);
    assert_eq!(plans(&out), vec![(1, 0, 1, Reason::DemotePressureSoft)]);
}

/// S22.6/A5.
#[test]
fn a5_swap_demotes_the_victim_before_the_promotion() {
    let tiers = [tier(0, 1000, 895), tier(1, 1000, 100)];
    let mut objects = vec![
        obj(1, 0, 10_000.0), // V
        pinned(obj(2, 0, 20_000.0), PolicyPin::PinHot),
        pinned(obj(3, 0, 30_000.0), PolicyPin::PinHot),
        pinned(obj(4, 0, 40_000.0), PolicyPin::PinHot),
        obj(9, 1, 50_000.0), // C
    ];
    let out = run(&tiers, &objects);
    assert_close(out.tiers[0].promote_gate, 24_000.0);
    assert_eq!(
        plans(&out),
        vec![(1, 0, 1, Reason::DemoteSwap), (9, 1, 0, Reason::Promote)]
    );
    // The promotion waits for its victim (the worker queue keeps it until
    // the demotion has ended); nothing else waits.
    assert_eq!(out.plans[0].after, None);
    assert_eq!(out.plans[1].after, Some(objects[0].oid));

    objects[0].heat = 45_000.0;
    let out = run(&tiers, &objects);
    assert!(out.plans.is_empty(), "{:?}", plans(&out));
    assert_eq!(reason_of(&out, 9), Reason::DeferredNoSwapVictim);
}

/// S22.6/A6.
#[test]
fn a6_tick_limit_keeps_the_hottest() {
    let config = PolicyConfig {
        max_moves_per_tick: 5,
        ..PolicyConfig::default()
    };
    let tiers = [tier(0, 100_000, 0), tier(1, 100_000, 200)];
    let objects: Vec<PlanObject> = (1..=20)
        .map(|k| obj(k, 1, f64::from(k) * 10_000.0))
        .collect();
    let out = run_with(&tiers, &objects, &config);
    let got: Vec<u32> = plans(&out).iter().map(|p| p.0).collect();
    assert_eq!(got, vec![20, 19, 18, 17, 16]);
    for k in 1..=15 {
        assert_eq!(reason_of(&out, k), Reason::DeferredTickLimit, "object {k}");
    }
}

/// S22.6/A7.
#[test]
fn a7_promotion_skips_ranks() {
    let tiers = [tier(0, 1000, 0), tier(1, 1000, 0), tier(2, 1000, 10)];
    let out = run(&tiers, &[obj(1, 2, 10_000.0)]);
    assert_eq!(plans(&out), vec![(1, 2, 0, Reason::Promote)]);
}

/// S22.6/A8.
#[test]
fn a8_pins() {
    let tiers = [tier(0, 1000, 10), tier(1, 1000, 10), tier(2, 1000, 10)];
    let hot = pinned(obj(1, 1, 0.0), PolicyPin::PinHot);
    let cold = pinned(obj(2, 0, 0.0), PolicyPin::PinCold);
    let cold_but_busy = pinned(obj(3, 2, 1e12), PolicyPin::PinCold);
    let out = run(&tiers, &[hot, cold, cold_but_busy]);
    let mut got = plans(&out);
    got.sort();
    assert_eq!(
        got,
        vec![
            (1, 1, 0, Reason::PromotePinHot),
            (2, 0, 2, Reason::DemotePinCold)
        ]
    );
    assert_eq!(reason_of(&out, 3), Reason::StaySlowestTier);

    // Hard pressure never demotes pin_hot.
    let tiers = [tier(0, 1000, 990), tier(1, 1000, 0)];
    let objects = [pinned(obj(1, 0, 0.0), PolicyPin::PinHot), obj(2, 0, 1e9)];
    let out = run(&tiers, &objects);
    assert_eq!(plans(&out), vec![(2, 0, 1, Reason::DemotePressureHard)]);
    assert_eq!(out.decision(&oid(1)).unwrap().verdict, Verdict::Stay);
}

/// S22.6/A9.
#[test]
fn a9_residency_and_cooldown() {
    let tiers = [tier(0, 1000, 0), tier(1, 1000, 20)];
    let mut young = obj(1, 1, 1e6);
    young.created_at = Some(now().sub_secs(30 * 60));
    let mut moved = obj(2, 1, 1e6);
    moved.last_movement_at = Some(now().sub_secs(2 * 3600));
    let out = run(&tiers, &[young.clone(), moved.clone()]);
    assert!(out.plans.is_empty());
    assert_eq!(reason_of(&out, 1), Reason::DeferredMinResidency);
    assert_eq!(reason_of(&out, 2), Reason::DeferredCooldown);
    let d = out.decision(&oid(2)).unwrap();
    assert_close(d.numbers.since_move_secs.unwrap(), 7200.0);
    assert_close(d.numbers.age_secs.unwrap(), 7200.0);

    // Under hard pressure both are ignored.
    young.tier = 0;
    moved.tier = 0;
    let tiers = [tier(0, 1000, 995), tier(1, 1000, 0)];
    let out = run(&tiers, &[young, moved]);
    let mut got = plans(&out);
    got.sort();
    assert_eq!(
        got,
        vec![
            (1, 0, 1, Reason::DemotePressureHard),
            (2, 0, 1, Reason::DemotePressureHard)
        ]
    );
}

/// S22.6/A10.
#[test]
fn a10_an_object_with_a_queued_plan_gets_no_second_one() {
    let tiers = [tier(0, 1000, 0), tier(1, 1000, 100)];
    let mut objects: Vec<PlanObject> = (1..=3).map(|k| obj(k, 1, 1e6)).collect();
    let first = run(&tiers, &objects);
    assert_eq!(first.plans.len(), 3);
    for p in &first.plans {
        objects[p.index].in_flight = true;
    }
    let second = run(&tiers, &objects);
    assert!(second.plans.is_empty());
    for k in 1..=3 {
        assert_eq!(reason_of(&second, k), Reason::BlockedInFlight);
    }
}

#[test]
fn percentile_exceptions_for_small_tiers() {
    // n = 1: both quantiles are the only heat.
    let tiers = [tier(0, 1000, 10), tier(1, 1000, 10)];
    let out = run(&tiers, &[obj(1, 0, 7.0), obj(2, 1, 3.0)]);
    assert_eq!(out.tiers[0].promote_quantile, Some(7.0));
    assert_eq!(out.tiers[0].demote_quantile, Some(7.0));
    // n = 2: P uses H[n−2] = H[0], D uses H[1].
    let out = run(&tiers, &[obj(1, 0, 7.0), obj(2, 0, 9.0)]);
    assert_eq!(out.tiers[0].promote_quantile, Some(7.0));
    assert_eq!(out.tiers[0].demote_quantile, Some(9.0));
    // An empty tier has no quantile: entering needs the minimum heat only.
    assert_eq!(out.tiers[1].promote_quantile, None);
    assert_eq!(out.tiers[1].promote_gate, 4096.0);
    assert_eq!(out.tiers[1].demote_gate, None);
}

#[test]
fn min_promote_heat_gates_an_empty_fast_tier() {
    let tiers = [tier(0, 1000, 0), tier(1, 1000, 20)];
    let out = run(&tiers, &[obj(1, 1, 4095.0), obj(2, 1, 4096.0)]);
    assert_eq!(plans(&out), vec![(2, 1, 0, Reason::Promote)]);
    assert_eq!(reason_of(&out, 1), Reason::StayBelowPromoteGate);
}

#[test]
fn ties_are_broken_by_oid() {
    let config = PolicyConfig {
        max_moves_per_tick: 2,
        ..PolicyConfig::default()
    };
    let tiers = [tier(0, 1000, 0), tier(1, 1000, 40)];
    let objects = [
        obj(4, 1, 1e5),
        obj(2, 1, 1e5),
        obj(3, 1, 1e5),
        obj(1, 1, 1e5),
    ];
    let out = run_with(&tiers, &objects, &config);
    let got: Vec<u32> = plans(&out).iter().map(|p| p.0).collect();
    assert_eq!(got, vec![1, 2]);
}

#[test]
fn room_is_recomputed_as_plans_are_emitted() {
    // Tier 0 takes 3 more 10 MiB objects below its 90 % target.
    let tiers = [tier(0, 1000, 870), tier(1, 1000, 100)];
    let objects: Vec<PlanObject> = (1..=10).map(|k| obj(k, 1, 1e5 + f64::from(k))).collect();
    let out = run(&tiers, &objects);
    let got: Vec<u32> = plans(&out).iter().map(|p| p.0).collect();
    assert_eq!(got, vec![10, 9, 8]);
    assert_eq!(out.tiers[0].projected_used_bytes, 900 * MIB);
}

#[test]
fn byte_limit_per_tick_lets_the_first_plan_through() {
    let config = PolicyConfig {
        max_bytes_per_tick: 15 * MIB,
        ..PolicyConfig::default()
    };
    let tiers = [tier(0, 10_000, 0), tier(1, 10_000, 100)];
    let objects: Vec<PlanObject> = (1..=3).map(|k| obj(k, 1, 1e5 * f64::from(k))).collect();
    let out = run_with(&tiers, &objects, &config);
    assert_eq!(plans(&out), vec![(3, 1, 0, Reason::Promote)]);
    assert_eq!(reason_of(&out, 2), Reason::DeferredTickLimit);
}

#[test]
fn plan_order_is_hard_pressure_pins_promotions_soft() {
    // Tier 1 is under hard pressure, tier 0 has room for hot objects.
    let tiers = [tier(0, 1000, 100), tier(1, 1000, 985), tier(2, 10_000, 0)];
    let objects = [
        obj(1, 1, 0.0),                             // hard-pressure victim
        pinned(obj(2, 2, 0.0), PolicyPin::PinHot),  // pin move
        obj(3, 2, 1e6),                             // promotion
        pinned(obj(4, 0, 0.0), PolicyPin::PinCold), // pin move (cold)
    ];
    let out = run(&tiers, &objects);
    let got: Vec<Reason> = out.plans.iter().map(|p| p.reason).collect();
    assert_eq!(
        got,
        vec![
            Reason::DemotePressureHard,
            Reason::DemotePinCold,
            Reason::PromotePinHot,
            Reason::Promote
        ]
    );
    assert_eq!(plans(&out)[2], (2, 2, 0, Reason::PromotePinHot));
}

#[test]
fn idle_demotion_moves_one_rank_when_enabled() {
    let tiers = [tier(0, 1000, 100), tier(1, 1000, 100), tier(2, 1000, 0)];
    let mut idle = obj(1, 0, 0.0);
    idle.last_heat_sample_at = Some(now().sub_secs(10 * 86400));
    let mut busy = obj(2, 0, 0.0);
    busy.last_heat_sample_at = Some(now().sub_secs(60));
    let objects = [idle, busy];
    let out = run(&tiers, &objects);
    assert!(out.plans.is_empty(), "idle demotion is off by default");
    let config = PolicyConfig {
        demote_idle_after_seconds: 7 * 86400,
        ..PolicyConfig::default()
    };
    let out = run_with(&tiers, &objects, &config);
    assert_eq!(plans(&out), vec![(1, 0, 1, Reason::DemoteIdle)]);
}

#[test]
fn evacuation_overrides_gates_and_pins_but_not_protocol_pins() {
    let tiers = [tier(0, 1000, 100), tier(1, 1000, 100), tier(2, 1000, 100)];
    let mut lun = obj(4, 1, 0.0);
    lun.pin = PinState::PinLun;
    let mut young = obj(5, 1, 0.0);
    young.created_at = Some(now());
    let objects = [
        obj(1, 1, 1e9),
        pinned(obj(2, 1, 0.0), PolicyPin::PinHot),
        pinned(obj(3, 2, 0.0), PolicyPin::PinCold),
        lun,
        young,
    ];
    let out = plan(&PlanInput {
        tiers: &tiers,
        objects: &objects,
        config: &PolicyConfig::default(),
        now: now(),
        evacuation: Some(Evacuation { tier: 1, to: None }),
        pool_offline: false,
    });
    let mut got = plans(&out);
    got.sort();
    assert_eq!(
        got,
        vec![
            (1, 1, 2, Reason::Evacuate),
            (2, 1, 2, Reason::Evacuate),
            (5, 1, 2, Reason::Evacuate)
        ]
    );
    assert_eq!(reason_of(&out, 4), Reason::BlockedPinLun);
    // The pin_cold object on the last rank does not come back to tier 1.
    assert_eq!(reason_of(&out, 3), Reason::StaySlowestTier);

    // --to is preferred; a full slower tier sends objects to a faster one.
    let tiers = [tier(0, 1000, 100), tier(1, 1000, 100), tier(2, 1000, 1000)];
    let out = plan(&PlanInput {
        tiers: &tiers,
        objects: &objects[..1],
        config: &PolicyConfig::default(),
        now: now(),
        evacuation: Some(Evacuation { tier: 1, to: None }),
        pool_offline: false,
    });
    assert_eq!(plans(&out), vec![(1, 1, 0, Reason::Evacuate)]);
}

#[test]
fn tier_states_limit_where_objects_go() {
    let mut tiers = [tier(0, 1000, 0), tier(1, 1000, 20)];
    tiers[0].faulted = true;
    let out = run(&tiers, &[obj(1, 1, 1e6)]);
    assert!(out.plans.is_empty());
    assert_eq!(reason_of(&out, 1), Reason::DeferredTierFaulted);

    tiers[0].faulted = false;
    tiers[1].down = true;
    let out = run(&tiers, &[obj(1, 1, 1e6)]);
    assert_eq!(reason_of(&out, 1), Reason::DeferredTierFaulted);

    tiers[1].down = false;
    tiers[0].inactive = true;
    let out = run(&tiers, &[obj(1, 1, 1e6)]);
    assert_eq!(reason_of(&out, 1), Reason::DeferredTierInactive);
    // A pin move may wake an inactive tier.
    let out = run(&tiers, &[pinned(obj(1, 1, 0.0), PolicyPin::PinHot)]);
    assert_eq!(plans(&out), vec![(1, 1, 0, Reason::PromotePinHot)]);

    tiers[0].inactive = false;
    tiers[0].create_disabled = true;
    let out = run(&tiers, &[obj(1, 1, 1e6)]);
    assert!(out.plans.is_empty());

    // A tier never measured counts as full: nothing moves into it, but it
    // is not put under pressure either.
    let tiers = [TierInput::new(0, 1000 * MIB, None), tier(1, 1000, 20)];
    let out = run(&tiers, &[obj(1, 1, 1e6), obj(2, 0, 0.0)]);
    assert!(out.plans.is_empty());
    assert_eq!(out.tiers[0].pressure, Pressure::None);
    assert_eq!(reason_of(&out, 1), Reason::DeferredDestinationFull);
}

#[test]
fn retry_policy_and_blockers() {
    let tiers = [tier(0, 1000, 0), tier(1, 1000, 100)];
    let mut waiting = obj(1, 1, 1e6);
    waiting.state = MovementState::Failed;
    waiting.attempts = 1;
    waiting.next_attempt_at = Some(now().add_secs(900));
    let mut due = obj(2, 1, 1e6);
    due.state = MovementState::Failed;
    due.attempts = 3;
    due.next_attempt_at = Some(now().sub_secs(1));
    let mut exhausted = obj(3, 1, 1e6);
    exhausted.state = MovementState::Failed;
    exhausted.attempts = 8;
    let mut staged = obj(4, 1, 1e6);
    staged.blocker = Some(Blocker::RangeStaged);
    staged.next_attempt_at = Some(now().add_secs(300));
    let mut lease = obj(5, 1, 1e6);
    lease.pin = PinState::PinLease;
    let mut links = obj(6, 1, 1e6);
    links.pin = PinState::PinHardlink;
    let mut copying = obj(7, 1, 1e6);
    copying.state = MovementState::CopyInProgress;
    let out = run(
        &tiers,
        &[waiting, due, exhausted, staged, lease, links, copying],
    );
    assert_eq!(plans(&out), vec![(2, 1, 0, Reason::Promote)]);
    assert_eq!(reason_of(&out, 1), Reason::DeferredRetryBackoff);
    assert_eq!(reason_of(&out, 3), Reason::BlockedMaxAttempts);
    assert_eq!(reason_of(&out, 4), Reason::BlockedRangeStaged);
    assert_eq!(reason_of(&out, 5), Reason::BlockedPinLease);
    assert_eq!(reason_of(&out, 6), Reason::BlockedHardlinks);
    assert_eq!(reason_of(&out, 7), Reason::BlockedInFlight);
    assert_eq!(out.decision(&oid(3)).unwrap().numbers.attempts, 8);
}

#[test]
fn deferred_reasons_from_the_worker_map_to_blockers() {
    for (text, b) in [
        ("lun quiesce required", Blocker::PinLun),
        ("lease pinned", Blocker::PinLease),
        (
            "st_nlink is 2; hard-linked files are not moved",
            Blocker::Hardlinks,
        ),
        ("2 passthrough handle(s) open", Blocker::PassthroughOpen),
        ("range staged", Blocker::RangeStaged),
        ("not a regular file (directory)", Blocker::NotRegular),
    ] {
        assert_eq!(Blocker::from_deferred_reason(text), Some(b), "{text}");
    }
    assert_eq!(Blocker::from_deferred_reason("cutover busy: x"), None);
}

#[test]
fn offline_pool_and_single_tier_plan_nothing() {
    let tiers = [tier(0, 1000, 995), tier(1, 1000, 0)];
    let objects = [obj(1, 0, 0.0)];
    let out = plan(&PlanInput {
        tiers: &tiers,
        objects: &objects,
        config: &PolicyConfig::default(),
        now: now(),
        evacuation: None,
        pool_offline: true,
    });
    assert!(out.plans.is_empty());
    assert_eq!(reason_of(&out, 1), Reason::DeferredPoolOffline);

    let out = run(&tiers[..1], &objects);
    assert!(out.plans.is_empty());
    assert_eq!(reason_of(&out, 1), Reason::StayFastestTier);
}

#[test]
fn synthetic_pass_is_consistent() {
    let out = plan_synthetic(20_000);
    assert_eq!(out.decisions.len(), 20_000);
    assert!(!out.plans.is_empty() && out.plans.len() <= 256);
    let mut seen = std::collections::HashSet::new();
    for p in &out.plans {
        assert!(seen.insert(p.oid), "one plan per object per tick");
        assert_eq!(
            out.decisions[p.index].verdict,
            Verdict::Move {
                from: p.from,
                to: p.to
            }
        );
    }
    let moves = out
        .decisions
        .iter()
        .filter(|d| matches!(d.verdict, Verdict::Move { .. }))
        .count();
    assert_eq!(moves, out.plans.len());
    for d in &out.decisions {
        assert_eq!(
            d.reason.is_move(),
            matches!(d.verdict, Verdict::Move { .. })
        );
    }
}

/// N12's planning part; run with
/// `cargo test --release -p smoothfs-control --test planner -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run in release"]
fn synthetic_million_objects_timing() {
    let now = Timestamp::from_unix_secs(1_750_000_000);
    let t0 = std::time::Instant::now();
    let (tiers, objects) = smoothfs_control::planner::synthetic_input(1_000_000, now);
    let built = t0.elapsed();
    let t1 = std::time::Instant::now();
    let out = run_with(&tiers, &objects, &PolicyConfig::default());
    let planned = t1.elapsed();
    let t2 = std::time::Instant::now();
    let whole = plan_synthetic(1_000_000);
    let total = t2.elapsed();
    println!(
        "build {built:?}, plan {planned:?}, plan_synthetic {total:?}, plans {}",
        out.plans.len()
    );
    assert_eq!(whole.plans.len(), out.plans.len());
}

/// Room (S22.4/3) keeps the move reserve free: a destination must keep
/// `size + max(smoothfs_move_reserve_bytes, 64 MiB)` free, or W6 and the
/// data plane's MOVE_PLAN gate 15 refuse the move. Tier 0 of 200 MiB with
/// 100 MiB used is under its 90 % target for 8 more 10 MiB objects, but
/// only 3 leave 64 MiB free; with a 100 MiB reserve none do.
#[test]
fn promotions_leave_the_move_reserve_free_on_the_destination() {
    let tiers = [tier(0, 200, 100), tier(1, 1000, 200)];
    let objects: Vec<PlanObject> = (1..=10)
        .map(|n| obj(n, 1, 100_000.0 * f64::from(n)))
        .collect();
    // 200 MiB with 100 MiB used: 64 MiB reserve + 8 MiB planning slack
    // leave room for two 10 MiB objects (three would leave 70 MiB).
    let out = run(&tiers, &objects);
    let promoted: Vec<u32> = plans(&out).iter().map(|p| p.0).collect();
    assert_eq!(promoted, vec![10, 9], "the two hottest");
    assert_eq!(reason_of(&out, 8), Reason::DeferredNoSwapVictim);

    let mut cfg = PolicyConfig {
        move_reserve_bytes: 100 * MIB,
        ..PolicyConfig::default()
    };
    assert!(plans(&run_with(&tiers, &objects, &cfg)).is_empty());
    // A reserve below the data plane's gate still leaves 64 MiB (+ slack).
    cfg.move_reserve_bytes = 0;
    assert_eq!(plans(&run_with(&tiers, &objects, &cfg)).len(), 2);
}

/// A tier whose free space fell into the planning slack (its own metadata
/// grew after the tick that filled it) still swaps: an exchange that does
/// not grow the tier needs only the move reserve. Before, every candidate
/// was deferred (no-swap-victim) for good.
#[test]
fn a_tier_inside_its_planning_slack_still_swaps() {
    // 200 MiB, 132 MiB used: 68 MiB free, between the 64 MiB reserve and
    // reserve + 8 MiB slack; no room to fill, room to exchange.
    let tiers = [tier(0, 200, 132), tier(1, 1000, 200)];
    let objects = vec![
        obj(1, 0, 10_000.0),  // the victim
        obj(2, 1, 500_000.0), // the candidate
    ];
    let out = run(&tiers, &objects);
    assert_eq!(
        plans(&out),
        vec![(1, 0, 1, Reason::DemoteSwap), (2, 1, 0, Reason::Promote)]
    );
}
