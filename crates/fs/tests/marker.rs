//! S1.2 tier markers and pool lock on real directories.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use smoothfs_fs::marker::{self, PoolLock, TierMarker, establish_markers, read_marker};
use uuid::Uuid;

fn tiers(dir: &tempfile::TempDir, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let p = dir.path().join(format!("t{i}"));
            std::fs::create_dir(&p).unwrap();
            p
        })
        .collect()
}

#[test]
fn a1_first_mount_writes_distinct_markers_slots_0_1_one_meta() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiers(&dir, 2);
    let pool = Uuid::new_v4();
    let id = establish_markers(&t, pool, false).unwrap();
    assert!(id.first_mount);
    assert!(!id.meta_rebuilt);
    assert_eq!(id.meta_rank, 0);
    let m0 = read_marker(&t[0]).unwrap().unwrap();
    let m1 = read_marker(&t[1]).unwrap().unwrap();
    assert_eq!(m0.pool_uuid, pool);
    assert_eq!(m1.pool_uuid, pool);
    assert_ne!(m0.tier_uuid, m1.tier_uuid);
    assert_eq!((m0.slot, m1.slot), (0, 1));
    assert_eq!([m0.meta, m1.meta], [true, false]);
    assert_eq!(id.tiers[1].tier_uuid, m1.tier_uuid);
    assert!(id.tiers.iter().all(|t| t.created));

    // Layout and modes (S29.1: .smoothfs 0700, marker 0600).
    let internal = t[0].join(".smoothfs");
    let mode = std::fs::metadata(&internal).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    let mode = std::fs::metadata(internal.join("tier.toml"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(internal.join("tier.toml")).unwrap();
    assert!(text.contains("format = 1"), "{text}");
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(&internal)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("tier.toml")]);

    // A second mount changes nothing.
    let again = establish_markers(&t, pool, false).unwrap();
    assert!(!again.first_mount);
    assert!(again.tiers.iter().all(|t| !t.created));
    assert_eq!(read_marker(&t[0]).unwrap().unwrap(), m0);
    assert_eq!(read_marker(&t[1]).unwrap().unwrap(), m1);
}

#[test]
fn a2_tier_of_another_pool_is_einval_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiers(&dir, 3);
    let p1 = Uuid::new_v4();
    establish_markers(&t[..2], p1, false).unwrap();
    let p2 = Uuid::new_v4();
    let e = establish_markers(&[t[2].clone(), t[1].clone()], p2, false).unwrap_err();
    assert_eq!(e.errno, libc::EINVAL);
    assert!(e.msg.contains(&p1.hyphenated().to_string()), "{}", e.msg);
    assert!(e.msg.contains(&p2.hyphenated().to_string()), "{}", e.msg);
    // Nothing was written on the new tier.
    assert!(read_marker(&t[2]).unwrap().is_none());
}

#[test]
fn duplicate_tier_uuid_is_einval() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiers(&dir, 2);
    let pool = Uuid::new_v4();
    establish_markers(&t[..1], pool, false).unwrap();
    // An operator copied tier 0's marker onto tier 1.
    std::fs::create_dir(t[1].join(".smoothfs")).unwrap();
    std::fs::copy(
        t[0].join(".smoothfs/tier.toml"),
        t[1].join(".smoothfs/tier.toml"),
    )
    .unwrap();
    let e = establish_markers(&t, pool, false).unwrap_err();
    assert_eq!(e.errno, libc::EINVAL);
    assert!(e.msg.contains("tier_uuid"), "{}", e.msg);
}

#[test]
fn missing_meta_tier_is_einval_unless_meta_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiers(&dir, 2);
    let pool = Uuid::new_v4();
    establish_markers(&t, pool, false).unwrap();
    let m1 = read_marker(&t[1]).unwrap().unwrap();
    // Mount without the meta tier (rank 0 of before).
    let only = vec![t[1].clone()];
    let e = establish_markers(&only, pool, false).unwrap_err();
    assert_eq!(e.errno, libc::EINVAL);
    assert!(e.msg.contains("metadata tier missing"), "{}", e.msg);
    assert!(!read_marker(&t[1]).unwrap().unwrap().meta);

    let id = establish_markers(&only, pool, true).unwrap();
    assert!(id.meta_rebuilt);
    assert!(id.tiers[0].is_meta);
    let after = read_marker(&t[1]).unwrap().unwrap();
    assert!(after.meta);
    assert_eq!((after.tier_uuid, after.slot), (m1.tier_uuid, m1.slot));
}

#[test]
fn meta_rebuild_is_a_no_op_when_meta_tier_present() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiers(&dir, 2);
    let pool = Uuid::new_v4();
    establish_markers(&t, pool, false).unwrap();
    let id = establish_markers(&t, pool, true).unwrap();
    assert!(!id.meta_rebuilt);
    assert_eq!(id.meta_rank, 0);
}

#[test]
fn reordering_keeps_slots_and_meta() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiers(&dir, 2);
    let pool = Uuid::new_v4();
    let first = establish_markers(&t, pool, false).unwrap();
    let reversed = vec![t[1].clone(), t[0].clone()];
    let id = establish_markers(&reversed, pool, false).unwrap();
    assert_eq!(id.meta_rank, 1);
    assert_eq!(id.tiers[0].slot, 1);
    assert_eq!(id.tiers[1].slot, 0);
    assert!(id.tiers[1].is_meta && !id.tiers[0].is_meta);
    assert_eq!(id.tiers[0].tier_uuid, first.tiers[1].tier_uuid);
    assert_eq!(id.tiers[1].tier_uuid, first.tiers[0].tier_uuid);
}

#[test]
fn new_tier_gets_lowest_free_slot() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiers(&dir, 4);
    let pool = Uuid::new_v4();
    establish_markers(&t[..3], pool, false).unwrap();
    // Drop slot 1 (tier t1) from the pool and add t3: it takes slot 1.
    let id = establish_markers(&[t[0].clone(), t[2].clone(), t[3].clone()], pool, false).unwrap();
    assert_eq!(
        id.tiers.iter().map(|t| t.slot).collect::<Vec<_>>(),
        vec![0, 2, 1]
    );
    assert!(id.tiers[2].created);
}

#[test]
fn malformed_marker_is_einval_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiers(&dir, 1);
    std::fs::create_dir(t[0].join(".smoothfs")).unwrap();
    std::fs::write(t[0].join(".smoothfs/tier.toml"), "format = 1\n").unwrap();
    let e = establish_markers(&t, Uuid::new_v4(), false).unwrap_err();
    assert_eq!(e.errno, libc::EINVAL);
    assert!(e.msg.contains("tier.toml"), "{}", e.msg);
}

#[test]
fn symlinked_internal_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiers(&dir, 1);
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, t[0].join(".smoothfs")).unwrap();
    let m = TierMarker {
        pool_uuid: Uuid::new_v4(),
        tier_uuid: Uuid::new_v4(),
        slot: 0,
        meta: true,
    };
    assert!(marker::write_marker(&t[0], &m).is_err());
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
}

#[test]
fn a3_pool_lock_is_exclusive_and_released_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run/smoothfs");
    let pool = Uuid::new_v4();
    let lock = PoolLock::acquire(&run, pool).unwrap();
    assert_eq!(lock.path(), run.join(format!("{}.lock", pool.hyphenated())));
    let e = PoolLock::acquire(&run, pool).unwrap_err();
    assert_eq!(e.errno, libc::EBUSY);
    assert!(e.msg.contains(&pool.hyphenated().to_string()));
    // Another pool is independent.
    let _other = PoolLock::acquire(&run, Uuid::new_v4()).unwrap();
    drop(lock);
    // An unmounted pool leaves no lock file behind.
    assert!(!run.join(format!("{}.lock", pool.hyphenated())).exists());
    let again = PoolLock::acquire(&run, pool).unwrap();
    assert!(again.path().exists());
    // A lock that is never released (a daemon that is still up) keeps
    // other mounts out.
    std::mem::forget(again);
    let e = PoolLock::acquire(&run, pool).unwrap_err();
    assert_eq!(e.errno, libc::EBUSY, "the forgotten lock is still held");
}

#[test]
fn a_stale_lock_file_from_a_dead_daemon_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let pool = Uuid::new_v4();
    std::fs::create_dir_all(&run).unwrap();
    let path = run.join(format!("{}.lock", pool.hyphenated()));
    std::fs::write(&path, b"").unwrap();
    let lock = PoolLock::acquire(&run, pool).unwrap();
    assert_eq!(lock.path(), path);
    drop(lock);
    assert!(!path.exists());
}
