//! S5: create placement and spill. Every test builds its own tiers, so
//! tests that fill tier 0 run in parallel without seeing each other.

mod common;

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt, chown};
use std::path::Path;

use common::*;

const MIB: usize = 1 << 20;

fn spill_of_16mib_lands_on_tier1_only(fs_type: &str) {
    let p = TwoTierPool::new(fs_type, fs_type, "");
    p.fill_tier0();
    assert!(used_pct(p.t0.path()) >= 98.0);

    let scratch = scratch_dir("smoothfs-src-");
    let src = scratch.path().join("big.bin");
    let data = pattern(16 * MIB, 0x5111);
    fs::write(&src, &data).unwrap();
    let dst = p.mnt("big.bin");
    cmd_ok("cp", &[&src, &dst]);

    assert_eq!(
        p.holders("big.bin"),
        vec![1],
        "the file must be on tier 1 only"
    );
    let want = sha256_bytes(&data);
    assert_eq!(sha256_file(&dst), want, "sha256 through the mount");
    assert_eq!(
        sha256_file(&p.t1.join("big.bin")),
        want,
        "sha256 of the tier-1 lower"
    );
    assert_eq!(fs::metadata(&dst).unwrap().len(), data.len() as u64);
}

#[test]
fn spill_lands_on_tier1_when_tier0_full() {
    if !require_root_and_fuse() {
        return;
    }
    spill_of_16mib_lands_on_tier1_only("ext4");
}

#[test]
fn spill_lands_on_tier1_when_tier0_full_on_xfs() {
    if !require_root_and_fuse() {
        return;
    }
    spill_of_16mib_lands_on_tier1_only("xfs");
}

#[test]
fn new_file_lands_on_tier0_when_it_has_room() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    fill_to_pct(p.t0.path(), 50);
    wait_statfs_refresh();
    fs::write(p.mnt("f"), pattern(MIB, 3)).unwrap();
    fs::create_dir(p.mnt("d")).unwrap();
    assert_eq!(p.holders("f"), vec![0]);
    assert_eq!(p.holders("d"), vec![0]);
}

#[test]
fn full_pct_option_moves_the_near_full_threshold() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "full_pct=40");
    fill_to_pct(p.t0.path(), 50);
    wait_statfs_refresh();
    fs::write(p.mnt("f"), pattern(MIB, 4)).unwrap();
    assert_eq!(
        p.holders("f"),
        vec![1],
        "tier 0 at 50% is near full with full_pct=40"
    );
}

#[test]
fn directories_and_symlinks_spill_like_files() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    p.fill_tier0();
    fs::create_dir(p.mnt("newdir")).unwrap();
    std::os::unix::fs::symlink("target", p.mnt("link")).unwrap();
    assert_eq!(p.holders("newdir"), vec![1]);
    assert_eq!(p.holders("link"), vec![1]);
    assert_eq!(fs::read_link(p.mnt("link")).unwrap(), Path::new("target"));
}

#[test]
fn spilled_create_materialises_the_parent_chain_on_tier1() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::with_lowers("ext4", "xfs", "", |t0, _| {
        for rel in ["a", "a/b", "a/b/c"] {
            let dir = t0.join(rel);
            fs::DirBuilder::new().mode(0o750).create(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
            chown(&dir, Some(1000), Some(1000)).unwrap();
        }
    });
    // Look the chain up through the mount first so each directory has its
    // identity on tier 0 before anything is placed on tier 1.
    let mut oids = Vec::new();
    for rel in ["a", "a/b", "a/b/c"] {
        let m = fs::metadata(p.mnt(rel)).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o750, "{rel} through the mount");
        oids.push(lower_oid(&p.t0.join(rel)));
    }
    p.fill_tier0();

    let data = pattern(2 * MIB, 0xd);
    fs::write(p.mnt("a/b/c/d.bin"), &data).unwrap();
    assert_eq!(
        p.holders("a/b/c/d.bin"),
        vec![1],
        "d.bin must spill to tier 1"
    );
    assert_eq!(sha256_file(&p.mnt("a/b/c/d.bin")), sha256_bytes(&data));

    for (rel, oid) in ["a", "a/b", "a/b/c"].iter().zip(&oids) {
        let lower = p.t1.join(rel);
        let m = fs::symlink_metadata(&lower)
            .unwrap_or_else(|e| panic!("{rel} not materialised on tier 1: {e}"));
        assert!(m.is_dir(), "{rel} on tier 1 is not a directory");
        assert_eq!(m.mode() & 0o7777, 0o750, "{rel} mode on tier 1");
        assert_eq!((m.uid(), m.gid()), (1000, 1000), "{rel} owner on tier 1");
        assert_eq!(&lower_oid(&lower), oid, "{rel} OID on tier 1");
    }
}

/// S5.4 A1: with tier 0 at 96 %, a file opened for writing on it is
/// mediated; when its writes hit ENOSPC the daemon moves it to tier 1
/// (cutover protocol, in-process) and every write succeeds.
#[test]
fn s5_4_a1_write_spills_an_open_file_to_the_next_tier() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    fill_to_pct(p.t0.path(), 96);
    wait_statfs_refresh();
    let free = p.t0.statvfs();
    let free_bytes = free.f_bavail * free.f_frsize;
    let total = (3 * free_bytes as usize).div_ceil(1 << 20) * (1 << 20);
    let data = pattern(total, 77);
    let path = p.mnt("growing.bin");
    {
        let mut f = File::create(&path).unwrap();
        assert_eq!(
            p.holders("growing.bin"),
            vec![0],
            "created on tier 0 (below 98 %)"
        );
        for chunk in data.chunks(1 << 20) {
            f.write_all(chunk).expect("every write succeeds (S5.4)");
        }
        f.sync_all().unwrap();
    }
    assert_eq!(p.holders("growing.bin"), vec![1], "relocated to tier 1");
    assert_eq!(sha256_file(&path), sha256_bytes(&data));
    let status = cmd_ok(SMOOTHFS, &["status", "--json", "--pool", p.pool.name()]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["spill_writes_total"], 1, "{v}");
}
