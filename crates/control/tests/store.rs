//! The store (S22.1) with the parts of S7, S9, S10.1, S22.2 and S26.3 it
//! carries: schema and migrations, pool registration, inventory, movement
//! transitions and their log rows, retry schedule, transaction seq, log
//! paging and retention, config, pin rules, evacuations and heat ingest.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use smoothfs_control::config::PolicyConfig;
use smoothfs_control::heat::{self, HeatIngest};
use smoothfs_control::planner::Blocker;
use smoothfs_control::store::{
    DiscoveredTier, EvacuationProgress, EvacuationState, LogQuery, MoveRef, NewObject,
    PoolDiscovery, PoolRecord, Recovery, SCHEMA_VERSION, Store, StoreError, Timestamp, oid_hex,
};
use smoothfs_uapi::event::ObjectEntry;
use smoothfs_uapi::heat::HeatRecord;
use smoothfs_uapi::ids::{MovementState, ObjectKind, PinState, PolicyPin};
use uuid::Uuid;

fn t0() -> Timestamp {
    Timestamp::from_unix_secs(1_750_000_000)
}

fn oid(n: u32) -> [u8; 16] {
    let mut o = [0u8; 16];
    o[0] = 0xab;
    o[12..].copy_from_slice(&n.to_be_bytes());
    o
}

fn discovery(uuid: Uuid, name: &str, paths: &[(u8, &str)]) -> PoolDiscovery {
    PoolDiscovery {
        uuid,
        name: name.to_string(),
        tiers: paths
            .iter()
            .map(|(rank, p)| DiscoveredTier {
                rank: *rank,
                path: PathBuf::from(p),
            })
            .collect(),
    }
}

fn new_pool(store: &mut Store) -> PoolRecord {
    store
        .register_pool(&discovery(
            Uuid::from_u128(0x1234),
            "pool",
            &[(0, "/t/0"), (1, "/t/1")],
        ))
        .unwrap()
}

/// An in-memory store with the test pool registered.
fn store_with_pool() -> (Store, PoolRecord) {
    let mut store = Store::open_in_memory().unwrap();
    let pool = new_pool(&mut store);
    (store, pool)
}

/// [`store_with_pool`] with object 1 on tier 0.
fn store_with_object() -> (Store, PoolRecord) {
    let (mut store, pool) = store_with_pool();
    add_object(&mut store, &pool, 1, 0);
    (store, pool)
}

/// Object `n`'s row, which must exist.
fn object_row(store: &Store, n: u32) -> smoothfs_control::store::ObjectRow {
    store.object(&oid(n)).unwrap().unwrap()
}

fn entry(n: u32, tier: u8, size: u64) -> ObjectEntry {
    ObjectEntry {
        oid: oid(n),
        kind: ObjectKind::Regular,
        current_tier: tier,
        movement_state: MovementState::Placed,
        pin_state: PinState::None,
        policy_pin: PolicyPin::None,
        mediated: false,
        size_bytes: size,
        mtime_ns: 1,
        nlink: 1,
        object_gen: 0,
        rel_path: PathBuf::from(format!("dir/f{n}")),
    }
}

fn add_object(store: &mut Store, pool: &PoolRecord, n: u32, rank: u8) {
    let created = store
        .insert_object(
            &NewObject {
                oid: oid(n),
                namespace_id: pool.namespace_id.clone(),
                current_tier_id: pool.tiers[usize::from(rank)].id.clone(),
                rel_path: format!("f{n}"),
                size_bytes: 10,
                mtime_ns: 0,
                pin_state: PinState::None,
                policy_pin: PolicyPin::None,
                mediated: false,
                object_gen: 0,
            },
            t0(),
        )
        .unwrap();
    assert!(created);
}

fn mv<'a>(pool: &'a PoolRecord, seq: u64, from: u8, to: u8) -> MoveRef<'a> {
    MoveRef {
        transaction_seq: seq,
        source_tier_id: &pool.tiers[usize::from(from)].id,
        dest_tier_id: &pool.tiers[usize::from(to)].id,
        rel_path: "",
    }
}

fn log_for(store: &Store, n: u32) -> Vec<(Option<MovementState>, MovementState)> {
    let mut rows = store
        .movement_log(&LogQuery {
            object_id: Some(oid(n)),
            limit: 500,
            ..LogQuery::default()
        })
        .unwrap();
    rows.reverse();
    rows.iter().map(|r| (r.from_state, r.to_state)).collect()
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

// ---------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------

#[test]
fn schema_v1_has_every_table_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/control.db");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), i64::from(SCHEMA_VERSION));
    let conn = raw(&path);
    let names = |kind: &str| -> HashSet<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = ?1 AND name NOT LIKE 'sqlite_%'")
            .unwrap();
        stmt.query_map([kind], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let tables = names("table");
    for t in [
        "placement_domains",
        "tier_targets",
        "managed_namespaces",
        "smoothfs_objects",
        "smoothfs_movement_log",
        "smoothfs_pin_rules",
        "smoothfs_evacuations",
        "control_plane_config",
    ] {
        assert!(tables.contains(t), "missing table {t}");
    }
    let index_sql: Vec<String> = conn
        .prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for cols in [
        "tier_targets(placement_domain, backend_kind, rank)",
        "managed_namespaces(backend_kind, backend_ref)",
        "managed_namespaces(backend_kind, name)",
        "smoothfs_objects(namespace_id)",
        "smoothfs_objects(namespace_id, rel_path)",
        "smoothfs_objects(namespace_id, current_tier_id)",
        "smoothfs_objects(namespace_id, movement_state)",
        "smoothfs_movement_log(object_id, id)",
        "smoothfs_movement_log(written_at)",
    ] {
        assert!(
            index_sql.iter().any(|s| s.contains(cols)),
            "missing index on {cols}"
        );
    }
    assert!(
        index_sql
            .iter()
            .any(|s| s.contains("movement_state)") && s.contains("WHERE movement_state NOT IN")),
        "the (namespace_id, movement_state) index is partial"
    );
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn reopening_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.db");
    let pool = {
        let mut store = Store::open(&path).unwrap();
        let pool = new_pool(&mut store);
        add_object(&mut store, &pool, 1, 0);
        pool
    };
    for _ in 0..3 {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 1);
        assert!(store.object(&oid(1)).unwrap().is_some());
        assert_eq!(store.pools().unwrap(), vec![pool.clone()]);
    }
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.db");
    drop(Store::open(&path).unwrap());
    raw(&path)
        .pragma_update(None, "user_version", SCHEMA_VERSION as i64 + 1)
        .unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::FutureSchema {
                found: 2,
                supported: 1
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("newer") && msg.contains('2'), "{msg}");
}

#[test]
fn check_constraints_and_foreign_keys_hold() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.db");
    let mut store = Store::open(&path).unwrap();
    let pool = new_pool(&mut store);
    let conn = raw(&path);
    conn.pragma_update(None, "foreign_keys", true).unwrap();
    let insert = |oid: &str, state: &str, pin: &str, tier: &str| {
        conn.execute(
            "INSERT INTO smoothfs_objects (object_id, namespace_id, current_tier_id, \
             movement_state, pin_state, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'x', 'x')",
            [oid, &pool.namespace_id, tier, state, pin],
        )
    };
    let good = "00112233445566778899aabbccddeeff";
    let tier = pool.tiers[0].id.as_str();
    assert!(insert("0011", "placed", "none", tier).is_err(), "length 32");
    assert!(
        insert(&good.to_uppercase(), "placed", "none", tier).is_err(),
        "lowercase hex"
    );
    assert!(insert(good, "moving", "none", tier).is_err(), "state names");
    assert!(
        insert(good, "placed", "pin_warm", tier).is_err(),
        "pin names"
    );
    assert!(
        insert(good, "placed", "none", "no-such-tier").is_err(),
        "tier FK"
    );
    insert(good, "stale", "pin_lun", tier).unwrap();
    // The movement log is append-only.
    add_object(&mut store, &pool, 1, 0);
    store
        .set_state(
            &oid(1),
            MovementState::PlanAccepted,
            &mv(&pool, 1, 0, 1),
            "",
            t0(),
        )
        .unwrap();
    assert!(
        conn.execute("UPDATE smoothfs_movement_log SET to_state = 'failed'", [])
            .is_err()
    );
}

// ---------------------------------------------------------------------------
// Pools (S22.2)
// ---------------------------------------------------------------------------

/// S22.2/A3.
#[test]
fn an_unknown_pool_is_registered_automatically() {
    let mut store = Store::open_in_memory().unwrap();
    let uuid = Uuid::from_u128(7);
    let pool = store
        .register_pool(&discovery(uuid, "media", &[(1, "/b"), (0, "/a")]))
        .unwrap();
    assert_eq!(pool.name, "media");
    assert_eq!(pool.backend_ref, uuid.to_string());
    let tiers: Vec<(&str, u8, &str, u8, u8)> = pool
        .tiers
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.rank,
                t.backing_ref.as_str(),
                t.target_fill_pct,
                t.full_threshold_pct,
            )
        })
        .collect();
    assert_eq!(
        tiers,
        vec![("tier0", 0, "/a", 90, 98), ("tier1", 1, "/b", 90, 98)]
    );
    // Found again by UUID and by name; registering twice adds nothing.
    assert_eq!(store.find_pool(&uuid, "").unwrap(), Some(pool.clone()));
    assert_eq!(
        store.find_pool(&Uuid::from_u128(8), "media").unwrap(),
        Some(pool.clone())
    );
    let again = store
        .register_pool(&discovery(uuid, "media", &[(0, "/a"), (1, "/b")]))
        .unwrap();
    assert_eq!(again, pool);
    assert_eq!(store.pools().unwrap().len(), 1);
}

/// S22.2/A1 and A2: an operator-made namespace is found by UUID; a rank
/// with a stored `backing_ref` needs no TIER_PATH.
#[test]
fn operator_rows_are_found_and_completed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.db");
    let mut store = Store::open(&path).unwrap();
    let uuid = Uuid::from_u128(99);
    {
        let conn = raw(&path);
        conn.execute_batch(&format!(
            "INSERT INTO placement_domains (id) VALUES ('dom');
             INSERT INTO managed_namespaces (id, name, placement_domain, backend_ref)
                 VALUES ('ns', 'ops-name', 'dom', '{uuid}');
             INSERT INTO tier_targets (id, name, placement_domain, rank, backing_ref, target_fill_pct)
                 VALUES ('fast', 'nvme', 'dom', 0, '/srv/nvme', 80),
                        ('slow', 'hdd', 'dom', 1, '', 90);"
        ))
        .unwrap();
    }
    let pool = store
        .register_pool(&discovery(uuid, "whatever", &[(1, "/srv/hdd")]))
        .unwrap();
    assert_eq!(pool.namespace_id, "ns");
    let tiers: Vec<(&str, u8, &str)> = pool
        .tiers
        .iter()
        .map(|t| (t.id.as_str(), t.rank, t.backing_ref.as_str()))
        .collect();
    assert_eq!(
        tiers,
        vec![("fast", 0, "/srv/nvme"), ("slow", 1, "/srv/hdd")]
    );
    assert_eq!(pool.tiers[0].target_fill_pct, 80);
}

/// S22.2/A4: a remount with a new path for rank 1 refreshes it.
#[test]
fn rediscovery_refreshes_tier_paths() {
    let mut store = Store::open_in_memory().unwrap();
    let uuid = Uuid::from_u128(5);
    let first = store
        .register_pool(&discovery(uuid, "p", &[(0, "/a"), (1, "/b")]))
        .unwrap();
    let second = store
        .register_pool(&discovery(uuid, "p", &[(0, "/a"), (1, "/new-b")]))
        .unwrap();
    assert_eq!(second.tiers[1].backing_ref, "/new-b");
    assert_eq!(second.tiers[1].id, first.tiers[1].id, "same tier row");
    assert_eq!(store.pool(&first.namespace_id).unwrap(), Some(second));
}

#[test]
fn discovery_without_paths_or_tiers_fails_and_writes_nothing() {
    let mut store = Store::open_in_memory().unwrap();
    let err = store
        .register_pool(&discovery(Uuid::from_u128(1), "empty", &[]))
        .unwrap_err();
    assert!(err.to_string().contains("no tiers"), "{err}");
    let err = store
        .register_pool(&discovery(
            Uuid::from_u128(2),
            "gap",
            &[(0, "/a"), (2, "/c")],
        ))
        .unwrap_err();
    assert!(err.to_string().contains("rank 1 is missing"), "{err}");
    let err = store
        .register_pool(&discovery(
            Uuid::from_u128(3),
            "nopath",
            &[(0, "/a"), (1, "")],
        ))
        .unwrap_err();
    assert!(
        err.to_string().contains("rank 1 has no lower directory"),
        "{err}"
    );
    assert!(store.pools().unwrap().is_empty());
}

/// S22.2/A5 (shortened): concurrent registration from 8 connections
/// leaves exactly one namespace and one row per tier.
#[test]
fn concurrent_registration_is_race_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.db");
    drop(Store::open(&path).unwrap());
    let uuid = Uuid::from_u128(0xfeed);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut store = Store::open(&path).unwrap();
                let mut ids = HashSet::new();
                for _ in 0..25 {
                    let p = store
                        .register_pool(&discovery(uuid, "race", &[(0, "/a"), (1, "/b")]))
                        .unwrap();
                    ids.insert(p.namespace_id.clone());
                    assert!(store.find_pool(&uuid, "race").unwrap().is_some());
                }
                ids
            })
        })
        .collect();
    let ids: HashSet<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(ids.len(), 1);
    let store = Store::open(&path).unwrap();
    let pools = store.pools().unwrap();
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].tiers.len(), 2);
}

// ---------------------------------------------------------------------------
// Inventory (S7.4)
// ---------------------------------------------------------------------------

/// S7.4/A1.
#[test]
fn inventory_creates_unsampled_rows() {
    let (mut store, pool) = store_with_pool();
    let entries: Vec<ObjectEntry> = (0..100).map(|n| entry(n, (n % 2) as u8, 4096)).collect();
    let stats = store.sync_inventory_page(&pool, &entries, t0()).unwrap();
    assert_eq!(stats.created, 100);
    let rows = store.objects(&pool.namespace_id, None, None, 1000).unwrap();
    assert_eq!(rows.len(), 100);
    for r in &rows {
        assert_eq!(r.movement_state, MovementState::Placed);
        assert_eq!(r.ewma_value, Some(0.0));
        assert_eq!(r.last_heat_sample_at, None);
        assert_eq!(r.created_at, t0().to_rfc3339());
    }
    assert_eq!(
        store.state_counts(&pool.namespace_id).unwrap(),
        vec![(MovementState::Placed, 100)]
    );
}

#[test]
fn inventory_refreshes_placed_rows_and_leaves_moves_alone() {
    let (mut store, pool) = store_with_pool();
    let policy = PolicyConfig::default();
    let entries: Vec<ObjectEntry> = (1..=4).map(|n| entry(n, 0, 100)).collect();
    store.sync_inventory_page(&pool, &entries, t0()).unwrap();
    // 2 fails once, 3 is mid-move.
    store
        .record_failure(
            &oid(2),
            &mv(&pool, 1, 0, 1),
            "checksum mismatch",
            &policy,
            t0(),
        )
        .unwrap();
    store
        .set_state(
            &oid(3),
            MovementState::PlanAccepted,
            &mv(&pool, 2, 0, 1),
            "",
            t0(),
        )
        .unwrap();

    let mut next: Vec<ObjectEntry> = (1..=3).map(|n| entry(n, 1, 100)).collect();
    next[0].rel_path = PathBuf::from("renamed");
    next[1].size_bytes = 200; // 2 changed: attempts back to 0
    next.push(ObjectEntry {
        kind: ObjectKind::Directory,
        ..entry(50, 0, 0)
    });
    next.push(entry(51, 7, 0));
    let stats = store
        .sync_inventory_page(&pool, &next, t0().add_secs(10))
        .unwrap();
    assert_eq!(
        (
            stats.updated,
            stats.attempts_reset,
            stats.in_flight,
            stats.not_regular,
            stats.unknown_tier
        ),
        (2, 1, 1, 1, 1)
    );
    let r1 = object_row(&store, 1);
    assert_eq!(
        (r1.rel_path.as_str(), r1.current_tier_id.as_str()),
        ("renamed", pool.tiers[1].id.as_str())
    );
    let r2 = object_row(&store, 2);
    assert_eq!(
        (r2.movement_state, r2.attempts, r2.size_bytes),
        (MovementState::Failed, 0, 200)
    );
    assert_eq!(r2.next_attempt_at, None);
    let r3 = object_row(&store, 3);
    assert_eq!(
        r3.current_tier_id, pool.tiers[0].id,
        "in-flight row untouched"
    );

    // 4 was not listed in a full sync: stale. 3 is in flight: kept.
    let listed: HashSet<[u8; 16]> = next.iter().map(|e| e.oid).collect();
    assert_eq!(
        store
            .mark_unlisted_stale(&pool.namespace_id, &listed, t0().add_secs(20))
            .unwrap(),
        1
    );
    assert_eq!(object_row(&store, 4).movement_state, MovementState::Stale);
    // Listed again: revived.
    let stats = store
        .sync_inventory_page(&pool, &[entry(4, 0, 100)], t0().add_secs(30))
        .unwrap();
    assert_eq!(stats.revived, 1);
    assert_eq!(object_row(&store, 4).movement_state, MovementState::Placed);
}

/// S7.4/2–3: OBJECT_REMOVED makes a row stale; stale rows go after 7 days
/// and their log rows stay.
#[test]
fn stale_rows_are_deleted_after_retention_and_keep_their_log() {
    let (mut store, pool) = store_with_object();
    store
        .record_deferral(&oid(1), &mv(&pool, 1, 0, 1), "lease pinned", 300, t0())
        .unwrap();
    assert!(store.mark_stale(&oid(1), t0()).unwrap());
    assert!(!store.mark_stale(&oid(1), t0()).unwrap());
    assert_eq!(store.delete_stale_rows(t0()).unwrap(), 0);
    assert_eq!(store.delete_stale_rows(t0().add_secs(1)).unwrap(), 1);
    assert!(store.object(&oid(1)).unwrap().is_none());
    assert_eq!(log_for(&store, 1).len(), 1);
}

// ---------------------------------------------------------------------------
// Movement (S9.3, S9.5, S10.1, S10.2)
// ---------------------------------------------------------------------------

#[test]
fn a_successful_move_logs_every_step_once() {
    let (mut store, pool) = store_with_object();
    let m = MoveRef {
        rel_path: "plan/path",
        ..mv(&pool, 7, 0, 1)
    };
    let steps = [
        MovementState::PlanAccepted,
        MovementState::DestinationReserved,
        MovementState::CopyInProgress,
        MovementState::CopyComplete,
        MovementState::CopyVerified,
        MovementState::CutoverInProgress,
        MovementState::Switched,
        MovementState::CleanupInProgress,
        MovementState::CleanupComplete,
    ];
    for (k, s) in steps.iter().enumerate() {
        store
            .set_state(&oid(1), *s, &m, "", t0().add_secs(k as u64))
            .unwrap();
        let row = object_row(&store, 1);
        assert_eq!(row.movement_state, *s);
        if *s == MovementState::PlanAccepted {
            assert_eq!(
                row.intended_tier_id.as_deref(),
                Some(pool.tiers[1].id.as_str())
            );
            assert_eq!(
                (row.transaction_seq, row.rel_path.as_str()),
                (7, "plan/path")
            );
        }
    }
    let row = object_row(&store, 1);
    assert_eq!(
        row.current_tier_id, pool.tiers[1].id,
        "switched moved the row"
    );
    store.finalise_move(&oid(1), &m, t0().add_secs(60)).unwrap();
    let row = object_row(&store, 1);
    assert_eq!(row.movement_state, MovementState::Placed);
    assert_eq!(row.current_tier_id, pool.tiers[1].id);
    assert_eq!(row.intended_tier_id, None);
    assert_eq!(row.last_committed_cutover_gen, 1);
    assert_eq!(row.last_movement_at, Some(t0().add_secs(60).to_rfc3339()));
    assert_eq!((row.attempts, row.failure_reason.as_str()), (0, ""));

    let log = log_for(&store, 1);
    let mut expected = vec![(Some(MovementState::Placed), MovementState::PlanAccepted)];
    expected.extend(steps.windows(2).map(|w| (Some(w[0]), w[1])));
    assert_eq!(
        log, expected,
        "one row per step, none for the return to placed"
    );
    let rows = store.movement_log(&LogQuery::default()).unwrap();
    assert!(rows.iter().all(|r| r.transaction_seq == 7
        && r.source_tier == pool.tiers[0].id
        && r.dest_tier == pool.tiers[1].id));
}

#[test]
fn an_illegal_step_changes_nothing() {
    let (mut store, pool) = store_with_object();
    let err = store
        .set_state(
            &oid(1),
            MovementState::Switched,
            &mv(&pool, 1, 0, 1),
            "",
            t0(),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidTransition { .. }), "{err}");
    assert!(err.to_string().contains("placed"));
    assert_eq!(object_row(&store, 1).movement_state, MovementState::Placed);
    assert!(log_for(&store, 1).is_empty());
    assert!(matches!(
        store.finalise_move(&oid(1), &mv(&pool, 1, 0, 1), t0()),
        Err(StoreError::InvalidTransition { .. })
    ));
    assert!(matches!(
        store.set_state(
            &oid(9),
            MovementState::PlanAccepted,
            &mv(&pool, 1, 0, 1),
            "",
            t0()
        ),
        Err(StoreError::NoSuchObject(_))
    ));
}

/// S9.3/3 and S9.5/1–2.
#[test]
fn failures_follow_the_retry_schedule() {
    let (mut store, pool) = store_with_object();
    let policy = PolicyConfig::default();
    let mut delays = Vec::new();
    let mut now = t0();
    for attempt in 1..=8u32 {
        let m = mv(&pool, u64::from(attempt), 0, 1);
        store
            .set_state(&oid(1), MovementState::PlanAccepted, &m, "", now)
            .unwrap();
        store
            .set_state(&oid(1), MovementState::DestinationReserved, &m, "", now)
            .unwrap();
        let s = store
            .record_failure(&oid(1), &m, "checksum mismatch", &policy, now)
            .unwrap();
        assert_eq!(s.attempts, attempt);
        assert_eq!(s.exhausted, attempt == 8);
        delays.push(s.next_attempt_at.secs_since(now) as u64);
        let row = object_row(&store, 1);
        assert_eq!(row.movement_state, MovementState::Failed);
        assert_eq!(row.current_tier_id, pool.tiers[0].id);
        assert_eq!(row.intended_tier_id, None);
        assert_eq!(row.failure_reason, "checksum mismatch");
        assert_eq!(row.next_attempt_at, Some(s.next_attempt_at.to_rfc3339()));
        now = s.next_attempt_at;
    }
    assert_eq!(
        delays,
        vec![900, 1800, 3600, 7200, 14400, 28800, 57600, 86400]
    );
    let failed = store
        .movement_log(&LogQuery {
            object_id: Some(oid(1)),
            to_state: Some(MovementState::Failed),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(failed.len(), 8, "exactly one failed row per failure");
    assert_eq!(failed[0].payload["reason"], "checksum mismatch");
    // `smoothfs move retry`.
    assert!(store.reset_attempts(&oid(1), now).unwrap());
    let row = object_row(&store, 1);
    assert_eq!(
        (row.movement_state, row.attempts),
        (MovementState::Failed, 0)
    );
    assert_eq!(row.next_attempt_at, None);
}

/// S9.3/4 and S9.5/3.
#[test]
fn refusals_are_logged_at_most_hourly() {
    let (mut store, pool) = store_with_object();
    let m = mv(&pool, 1, 0, 1);
    let d1 = store
        .record_deferral(&oid(1), &m, "range staged", 300, t0())
        .unwrap();
    assert!(d1.log_id.is_some());
    assert_eq!(d1.next_attempt_at, t0().add_secs(300));
    let d2 = store
        .record_deferral(&oid(1), &m, "range staged", 300, t0().add_secs(1800))
        .unwrap();
    assert_eq!(d2.log_id, None);
    let d3 = store
        .record_deferral(&oid(1), &m, "range staged", 300, t0().add_secs(3600))
        .unwrap();
    assert!(d3.log_id.is_some());
    let rows = store
        .movement_log(&LogQuery {
            object_id: Some(oid(1)),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0].payload,
        serde_json::json!({"deferred": "range staged"})
    );
    let row = object_row(&store, 1);
    assert_eq!(
        (row.deferred_reason.as_str(), row.attempts),
        ("range staged", 0)
    );

    // A refusal at the cutover (EBUSY) is a transition and always logged.
    for s in [
        MovementState::PlanAccepted,
        MovementState::DestinationReserved,
        MovementState::CopyInProgress,
        MovementState::CopyComplete,
        MovementState::CopyVerified,
        MovementState::CutoverInProgress,
    ] {
        store
            .set_state(&oid(1), s, &m, "", t0().add_secs(3700))
            .unwrap();
    }
    let d4 = store
        .record_deferral(
            &oid(1),
            &m,
            "cutover busy: drain timeout",
            300,
            t0().add_secs(3700),
        )
        .unwrap();
    assert!(d4.log_id.is_some());
    let row = object_row(&store, 1);
    assert_eq!(row.movement_state, MovementState::Placed);
    assert_eq!(row.intended_tier_id, None);
    assert_eq!(
        log_for(&store, 1).last(),
        Some(&(
            Some(MovementState::CutoverInProgress),
            MovementState::Placed
        ))
    );
}

/// S9.6/2.
#[test]
fn an_operator_abort_logs_failed_without_counting_an_attempt() {
    let (mut store, pool) = store_with_object();
    let m = mv(&pool, 3, 0, 1);
    store
        .set_state(&oid(1), MovementState::PlanAccepted, &m, "", t0())
        .unwrap();
    store
        .record_abort(&oid(1), &m, "aborted by operator", 21600, t0())
        .unwrap();
    let row = object_row(&store, 1);
    assert_eq!(
        (row.movement_state, row.attempts),
        (MovementState::Placed, 0)
    );
    assert_eq!(row.next_attempt_at, Some(t0().add_secs(21600).to_rfc3339()));
    assert_eq!(
        log_for(&store, 1),
        vec![
            (Some(MovementState::Placed), MovementState::PlanAccepted),
            (Some(MovementState::PlanAccepted), MovementState::Failed)
        ]
    );
}

/// S10.1/2.
#[test]
fn transaction_seq_continues_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.db");
    let ns = {
        let mut store = Store::open(&path).unwrap();
        let pool = new_pool(&mut store);
        assert_eq!(store.next_transaction_seq(&pool.namespace_id).unwrap(), 1);
        add_object(&mut store, &pool, 1, 0);
        let m = mv(&pool, 41, 0, 1);
        store
            .set_state(&oid(1), MovementState::PlanAccepted, &m, "", t0())
            .unwrap();
        store
            .record_failure(&oid(1), &m, "x", &PolicyConfig::default(), t0())
            .unwrap();
        pool.namespace_id
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(store.next_transaction_seq(&ns).unwrap(), 42);
}

/// S19.2/2 row results.
#[test]
fn recovery_results() {
    let (mut store, pool) = store_with_pool();
    for n in 1..=3 {
        add_object(&mut store, &pool, n, 0);
        let m = mv(&pool, u64::from(n), 0, 1);
        for s in [
            MovementState::PlanAccepted,
            MovementState::DestinationReserved,
            MovementState::CopyInProgress,
            MovementState::CopyComplete,
            MovementState::CopyVerified,
            MovementState::CutoverInProgress,
        ] {
            store.set_state(&oid(n), s, &m, "", t0()).unwrap();
        }
    }
    assert_eq!(store.recovery_rows(&pool.namespace_id).unwrap().len(), 3);
    store
        .recover_row(
            &oid(1),
            &Recovery::Forwarded {
                reason: "recovered: forwarded from cutover_in_progress".into(),
            },
            t0(),
        )
        .unwrap();
    store
        .recover_row(
            &oid(2),
            &Recovery::RolledBack {
                reason: "recovered: rolled back from cutover_in_progress".into(),
            },
            t0(),
        )
        .unwrap();
    store
        .recover_row(
            &oid(3),
            &Recovery::Gone {
                reason: "recovered: object gone".into(),
            },
            t0(),
        )
        .unwrap();
    let r1 = object_row(&store, 1);
    assert_eq!(
        (
            r1.movement_state,
            r1.current_tier_id.as_str(),
            r1.last_committed_cutover_gen
        ),
        (MovementState::Placed, pool.tiers[1].id.as_str(), 1)
    );
    let r2 = object_row(&store, 2);
    assert_eq!(
        (
            r2.movement_state,
            r2.current_tier_id.as_str(),
            r2.last_committed_cutover_gen
        ),
        (MovementState::Placed, pool.tiers[0].id.as_str(), 0)
    );
    assert_eq!(
        r2.failure_reason,
        "recovered: rolled back from cutover_in_progress"
    );
    assert_eq!(object_row(&store, 3).movement_state, MovementState::Stale);
    assert!(store.recovery_rows(&pool.namespace_id).unwrap().is_empty());
}

// ---------------------------------------------------------------------------
// Movement log (S26.3, S22.1/6)
// ---------------------------------------------------------------------------

/// S26.3/A1.
#[test]
fn log_pages_return_every_row_once_newest_first() {
    let (mut store, pool) = store_with_object();
    let policy = PolicyConfig::default();
    for k in 0..350u64 {
        let m = mv(&pool, k + 1, 0, 1);
        store
            .set_state(
                &oid(1),
                MovementState::PlanAccepted,
                &m,
                "",
                t0().add_secs(k),
            )
            .unwrap();
        store
            .record_failure(&oid(1), &m, "x", &policy, t0().add_secs(k))
            .unwrap();
    }
    let first = store
        .movement_log(&LogQuery {
            limit: 500,
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(first.len(), 500);
    let second = store
        .movement_log(&LogQuery {
            limit: 500,
            before_id: Some(first.last().unwrap().id),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(second.len(), 200);
    let ids: Vec<i64> = first.iter().chain(&second).map(|r| r.id).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 700);
    // Default page 100, cap 500.
    assert_eq!(store.movement_log(&LogQuery::default()).unwrap().len(), 100);
    let capped = store
        .movement_log(&LogQuery {
            limit: 10_000,
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(capped.len(), 500);
    let j = first[0].to_json();
    for key in [
        "id",
        "object_id",
        "path",
        "transaction_seq",
        "from_state",
        "to_state",
        "source_tier",
        "dest_tier",
        "payload",
        "written_at",
    ] {
        assert!(j.get(key).is_some(), "{key}");
    }
    assert_eq!(j["object_id"], oid_hex(&oid(1)));
    assert_eq!(j["path"], "f1");
    // --since.
    let recent = store
        .movement_log(&LogQuery {
            since: Some(t0().add_secs(340)),
            limit: 500,
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(recent.len(), 20);
}

#[test]
fn log_retention_deletes_old_rows() {
    let (mut store, pool) = store_with_object();
    let m = mv(&pool, 1, 0, 1);
    store
        .record_deferral(&oid(1), &m, "old", 300, t0())
        .unwrap();
    store
        .record_deferral(&oid(1), &m, "new", 300, t0().add_secs(91 * 86400))
        .unwrap();
    let cutoff = t0().add_secs(91 * 86400).sub_secs(90 * 86400);
    assert_eq!(store.delete_log_before(cutoff).unwrap(), 1);
    let rows = store.movement_log(&LogQuery::default()).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].payload["deferred"], "new");
}

// ---------------------------------------------------------------------------
// Config, pin rules, evacuations
// ---------------------------------------------------------------------------

#[test]
fn config_round_trips_with_warnings_for_bad_values() {
    let mut store = Store::open_in_memory().unwrap();
    store.config_set("smoothfs_hysteresis_pct", "0").unwrap();
    store.config_set("smoothfs_worker_count", "1000").unwrap();
    let (policy, warnings) = store.load_policy().unwrap();
    assert_eq!(policy.hysteresis_pct, 0);
    assert_eq!(policy.worker_count, 4);
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("smoothfs_worker_count"));
    assert!(
        store
            .set_policy_value("max_moves_per_tick", "0")
            .unwrap()
            .is_err()
    );
    store
        .set_policy_value("max_moves_per_tick", " 12 ")
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .config_get("smoothfs_max_moves_per_tick")
            .unwrap()
            .as_deref(),
        Some("12")
    );
    assert!(store.config_unset("smoothfs_worker_count").unwrap());
    assert_eq!(store.config_pairs().unwrap().len(), 2);
    assert!(store.load_policy().unwrap().1.is_empty());
}

#[test]
fn pin_rules_and_evacuations_persist() {
    let (mut store, pool) = store_with_pool();
    let a = store
        .add_pin_rule(&pool.namespace_id, "vm/**", PolicyPin::PinHot, true, t0())
        .unwrap();
    let b = store
        .add_pin_rule(
            &pool.namespace_id,
            "media/",
            PolicyPin::PinCold,
            false,
            t0(),
        )
        .unwrap();
    let rules = store.pin_rules(Some(&pool.namespace_id)).unwrap();
    assert_eq!(rules.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a, b]);
    assert_eq!((rules[0].pin, rules[0].mediated), (PolicyPin::PinHot, true));
    assert!(store.remove_pin_rule(a).unwrap());
    assert!(!store.remove_pin_rule(a).unwrap());
    assert_eq!(store.pin_rules(None).unwrap().len(), 1);

    let id = store
        .start_evacuation(&pool.namespace_id, &pool.tiers[1].id, t0())
        .unwrap();
    let progress = EvacuationProgress {
        objects_total: 10,
        objects_done: 4,
        objects_blocked: 1,
        bytes_total: 1000,
        bytes_done: 400,
    };
    store
        .update_evacuation(
            id,
            EvacuationState::Paused,
            &progress,
            "insufficient capacity",
            t0(),
        )
        .unwrap();
    let jobs = store.evacuations(Some(&pool.namespace_id), true).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].state, jobs[0].progress),
        (EvacuationState::Paused, progress)
    );
    assert_eq!(jobs[0].finished_at, None);
    store
        .update_evacuation(id, EvacuationState::Complete, &progress, "", t0())
        .unwrap();
    assert!(store.evacuations(None, true).unwrap().is_empty());
    assert!(
        store.evacuations(None, false).unwrap()[0]
            .finished_at
            .is_some()
    );
}

// ---------------------------------------------------------------------------
// Heat (S7.1–S7.3) and the planner's view
// ---------------------------------------------------------------------------

fn heat_record(n: u32, opens: u32, read: u64, write: u64) -> HeatRecord {
    HeatRecord {
        oid: oid(n),
        open_count_delta: opens,
        read_bytes_delta: read,
        write_bytes_delta: write,
        ..HeatRecord::default()
    }
}

/// S7.1/A1–A3 and S7.3 through the store.
#[test]
fn heat_samples_update_rows_and_report_unknown_oids() {
    let (mut store, pool) = store_with_object();
    let before = object_row(&store, 1);

    // A3: an empty event changes nothing.
    let out = heat::apply_heat_sample(&mut store, &[], t0().add_secs(5), 3600.0).unwrap();
    assert_eq!(out, HeatIngest::default());
    assert_eq!(object_row(&store, 1), before);

    // A1.
    let records = [
        heat_record(1, 3, 1 << 20, 2 << 20),
        heat_record(2, 1, 0, 0),
        heat_record(2, 1, 0, 0),
        heat_record(3, 1, 0, 0),
    ];
    let out = heat::apply_heat_sample(&mut store, &records, t0(), 3600.0).unwrap();
    assert_eq!(out.applied, 1);
    assert_eq!(out.unknown, vec![oid(2), oid(3)]);
    assert_eq!(out.pending(&records).len(), 3);
    let row = object_row(&store, 1);
    assert_eq!(row.ewma_value, Some(5255168.0));
    assert_eq!(row.last_heat_sample_at, Some(t0().to_rfc3339()));
    assert_eq!(row.updated_at, t0().to_rfc3339());

    // S7.3/A1: the caller INSPECTs, creates the row and re-applies.
    add_object(&mut store, &pool, 2, 1);
    let pending = out.pending(&records);
    let again = heat::apply_heat_sample(&mut store, &pending, t0(), 3600.0).unwrap();
    assert_eq!((again.applied, again.unknown.clone()), (2, vec![oid(3)]));
    assert_eq!(object_row(&store, 2).ewma_value, Some(8192.0));

    // A2 on a fresh row.
    add_object(&mut store, &pool, 5, 0);
    heat::apply_heat_sample(&mut store, &[heat_record(5, 0, 1000, 0)], t0(), 3600.0).unwrap();
    heat::apply_heat_sample(
        &mut store,
        &[heat_record(5, 0, 500, 0)],
        t0().add_secs(3600),
        3600.0,
    )
    .unwrap();
    assert_eq!(object_row(&store, 5).ewma_value, Some(1000.0));
}

/// S7.2/A1 through the planner's view of the store, plus tier ranks and
/// refusal blockers.
#[test]
fn planning_rows_carry_heat_now_ranks_and_blockers() {
    let (mut store, pool) = store_with_pool();
    add_object(&mut store, &pool, 1, 1);
    add_object(&mut store, &pool, 2, 0);
    add_object(&mut store, &pool, 3, 0);
    heat::apply_heat_sample(&mut store, &[heat_record(1, 0, 1000, 0)], t0(), 3600.0).unwrap();
    store
        .record_deferral(
            &oid(2),
            &mv(&pool, 1, 0, 1),
            "1 passthrough handle(s) open",
            300,
            t0(),
        )
        .unwrap();
    store.mark_stale(&oid(3), t0()).unwrap();

    let at = t0().add_secs(7200);
    let mut rows = store.planning_objects(&pool, at, 3600.0).unwrap();
    rows.sort_by_key(|r| r.oid);
    assert_eq!(rows.len(), 2, "stale rows are not planned");
    assert_eq!(
        (rows[0].oid, rows[0].tier, rows[0].heat),
        (oid(1), 1, 250.0)
    );
    assert_eq!(rows[0].created_at, Some(t0()));
    assert_eq!(rows[0].last_heat_sample_at, Some(t0()));
    // The refusal's backoff is over at t0 + 7200: no blocker any more.
    assert_eq!(rows[1].blocker, None);
    let rows = store
        .planning_objects(&pool, t0().add_secs(10), 3600.0)
        .unwrap();
    let r2 = rows.iter().find(|r| r.oid == oid(2)).unwrap();
    assert_eq!(r2.blocker, Some(Blocker::PassthroughOpen));
    assert_eq!(r2.next_attempt_at, Some(t0().add_secs(300)));
}

/// N12 (planning pass over 1,000,000 rows, loading from SQLite included)
/// and heat ingest; run with
/// `cargo test --release -p smoothfs-control --test store -- --ignored --nocapture`.
/// `ROWS=n` changes the row count; `KEEP_DB=path` builds the store there
/// once and later runs only time the load and the pass.
#[test]
#[ignore = "timing; run in release"]
fn million_rows_load_and_plan_timing() {
    use smoothfs_control::planner::{PlanInput, TierInput, plan};
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var_os("KEEP_DB")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("control.db"));
    let existed = path.exists();
    let mut store = Store::open(&path).unwrap();
    let pool = new_pool(&mut store);
    let n: u32 = std::env::var("ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    if !existed {
        fill_for_timing(&mut store, &pool, n);
    }
    drop(store);

    let store = Store::open(&path).unwrap();
    let now = t0().add_secs(7200);
    let t = std::time::Instant::now();
    let objects = store.planning_objects(&pool, now, 86400.0).unwrap();
    let loaded = t.elapsed();
    let tiers = [
        TierInput::new(0, 1 << 40, Some(700 << 30)),
        TierInput::new(1, 1 << 42, Some(1 << 40)),
    ];
    let config = PolicyConfig::default();
    let out = plan(&PlanInput {
        tiers: &tiers,
        objects: &objects,
        config: &config,
        now,
        evacuation: None,
        pool_offline: false,
    });
    println!(
        "load {} rows {loaded:?}, load + plan {:?}, {} plans",
        objects.len(),
        t.elapsed(),
        out.plans.len()
    );
}

fn fill_for_timing(store: &mut Store, pool: &PoolRecord, n: u32) {
    let entries: Vec<ObjectEntry> = (0..n)
        .map(|k| entry(k, (k % 3).min(1) as u8, 1 << 20))
        .collect();
    let t = std::time::Instant::now();
    for page in entries.chunks(10_000) {
        store.sync_inventory_page(pool, page, t0()).unwrap();
    }
    println!("inventory of {n} in pages of 10000: {:?}", t.elapsed());

    let records: Vec<HeatRecord> = (0..n).map(|k| heat_record(k, 1, 4096, 0)).collect();
    let t = std::time::Instant::now();
    for chunk in records.chunks(256) {
        heat::apply_heat_sample(store, chunk, t0().add_secs(60), 86400.0).unwrap();
    }
    let e = t.elapsed();
    println!(
        "heat ingest, one transaction per 256-record event: {e:?} ({:.0} records/s)",
        f64::from(n) / e.as_secs_f64()
    );
    let t = std::time::Instant::now();
    for chunk in records.chunks(65536) {
        heat::apply_heat_sample(store, chunk, t0().add_secs(120), 86400.0).unwrap();
    }
    let e = t.elapsed();
    println!(
        "heat ingest, 256 events per transaction: {e:?} ({:.0} records/s)",
        f64::from(n) / e.as_secs_f64()
    );
}

/// The write-behind cache gives every row exactly the EWMA the direct
/// per-event path gives (S7.1), once flushed; unknown OIDs come back for
/// INSPECT; a removed object is forgotten.
#[test]
fn heat_cache_matches_direct_ingest() {
    let mut a = Store::open_in_memory().unwrap();
    let mut b = Store::open_in_memory().unwrap();
    let pa = new_pool(&mut a);
    let pb = new_pool(&mut b);
    let entries: Vec<ObjectEntry> = (0..50).map(|k| entry(k, 0, 1 << 20)).collect();
    a.sync_inventory_page(&pa, &entries, t0()).unwrap();
    b.sync_inventory_page(&pb, &entries, t0()).unwrap();
    let mut cache = heat::HeatCache::new();
    for step in 0..6u64 {
        let now = t0().add_secs(60 + step * 1800);
        let records: Vec<HeatRecord> = (0..60)
            .map(|k| heat_record(k % 55, 1 + (k % 3), u64::from(k) * 1000, 7 * step))
            .collect();
        let direct = heat::apply_heat_sample(&mut a, &records, now, 3600.0).unwrap();
        let cached = cache.ingest(&b, &records, now, 3600.0).unwrap();
        assert_eq!(direct.applied, cached.applied);
        let mut du = direct.unknown.clone();
        let mut cu = cached.unknown.clone();
        du.sort();
        cu.sort();
        assert_eq!(du, cu, "unknown OIDs");
        if step % 2 == 1 {
            cache.flush(&mut b).unwrap();
        }
    }
    cache.flush(&mut b).unwrap();
    assert_eq!(cache.dirty(), 0);
    for k in 0..50 {
        let ra = object_row(&a, k);
        let rb = object_row(&b, k);
        let (ea, eb) = (ra.ewma_value.unwrap(), rb.ewma_value.unwrap());
        assert!((ea - eb).abs() <= ea.abs() * 1e-12, "oid {k}: {ea} vs {eb}");
        assert_eq!(ra.last_heat_sample_at, rb.last_heat_sample_at, "oid {k}");
    }
    cache.forget(&oid(3));
    assert_eq!(cache.len(), 49);
}

/// Heat ingest rate through the write-behind cache (issue 5: >= 1M
/// samples/s); run with
/// `cargo test --release -p smoothfs-control --test store -- --ignored --nocapture heat_cache_rate`.
#[test]
#[ignore = "timing; run in release"]
fn heat_cache_rate() {
    let (mut store, pool) = store_with_pool();
    let n = 100_000u32;
    let entries: Vec<ObjectEntry> = (0..n).map(|k| entry(k, 0, 1 << 20)).collect();
    for page in entries.chunks(10_000) {
        store.sync_inventory_page(&pool, page, t0()).unwrap();
    }
    let mut cache = heat::HeatCache::new();
    let events: Vec<Vec<HeatRecord>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(256)
        .map(|c| c.iter().map(|k| heat_record(*k, 1, 4096, 0)).collect())
        .collect();
    // Warm: every object loaded once.
    for e in &events {
        cache.ingest(&store, e, t0(), 86400.0).unwrap();
    }
    let rounds = 20u64;
    let t = std::time::Instant::now();
    for r in 0..rounds {
        let now = t0().add_secs(r + 1);
        for e in &events {
            cache.ingest(&store, e, now, 86400.0).unwrap();
        }
    }
    let ingest = t.elapsed();
    let t = std::time::Instant::now();
    let written = cache.flush(&mut store).unwrap();
    let flush = t.elapsed();
    let samples = rounds * u64::from(n);
    println!(
        "heat ingest: {samples} samples in {ingest:?} = {:.0} samples/s; flush of {written} rows {flush:?}",
        samples as f64 / ingest.as_secs_f64()
    );
}

/// Two processes write one store file (the control plane, and an operator
/// command or a second control plane): a read-then-write transaction that
/// started deferred failed at once with "database is locked"
/// (SQLITE_BUSY_SNAPSHOT, which the busy timeout does not retry) when the
/// other connection committed in between. Transactions now begin
/// IMMEDIATE: each waits its turn, none fails.
#[test]
fn two_connections_writing_one_store_never_see_database_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.db");
    let mut a = Store::open(&path).unwrap();
    let pool = new_pool(&mut a);
    for n in 1..=50 {
        add_object(&mut a, &pool, n, 1);
    }
    let tier = pool.tiers[0].id.clone();
    let p2 = path.clone();
    let other = std::thread::spawn(move || {
        let mut b = Store::open(&p2).unwrap();
        let mut errors = Vec::new();
        for round in 0..40u32 {
            for n in 1..=50 {
                let reason = if round % 2 == 0 {
                    "deferred:tick-limit"
                } else {
                    "deferred:destination-full"
                };
                if let Err(e) = smoothfs_control::storeext::log_planner_deferral(
                    &mut b,
                    &oid(n),
                    &tier,
                    reason,
                    t0(),
                ) {
                    errors.push(e.to_string());
                }
            }
        }
        errors
    });
    let mut errors = Vec::new();
    for round in 0..40u32 {
        for n in 1..=50 {
            if let Err(e) = smoothfs_control::storeext::log_planner_deferral(
                &mut a,
                &oid(n),
                &pool.tiers[1].id,
                if round % 2 == 0 {
                    "deferred:no-swap-victim"
                } else {
                    "deferred:cooldown"
                },
                t0(),
            ) {
                errors.push(e.to_string());
            }
        }
    }
    errors.extend(other.join().unwrap());
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
}
