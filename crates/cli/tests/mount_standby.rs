//! The metadata activity mask on real mounts (SPEC S2.2 A2, A3): with a
//! tier's bit clear, listings and lookups pass over it, resident objects
//! answer from cached attributes, and `ls -lR` plus PRUNE_DIRS issue no
//! read to its device.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use smoothfs_uapi::client::Client;
use smoothfs_uapi::codec::AttrBuf;
use smoothfs_uapi::event::{StatusItem, decode_list};
use smoothfs_uapi::ids::{Attr, Command};

fn pool_req(pool: &Pool) -> AttrBuf {
    let mut a = AttrBuf::new();
    a.put_bytes(
        Attr::PoolUuid,
        uuid::Uuid::parse_str(pool.uuid()).unwrap().as_bytes(),
    );
    a
}

fn status_item(c: &mut Client, pool: &Pool, name: &str) -> String {
    let r = c.request(Command::Status, &pool_req(pool)).unwrap();
    decode_list(&r.attrs(), Attr::StatusItems, StatusItem::decode)
        .unwrap()
        .into_iter()
        .find(|i| i.name == name)
        .map(|i| i.value)
        .unwrap_or_default()
}

fn set_mask(c: &mut Client, pool: &Pool, mask: &str) -> String {
    let mut a = pool_req(pool);
    a.put_str(Attr::Name, "metadata_active_tier_mask")
        .put_str(Attr::Value, mask);
    let r = c.request(Command::SetTunable, &a).unwrap();
    r.attrs().require_str(Attr::Value).unwrap().to_string()
}

/// Reads completed on the block device behind `dev` (/dev/loopN).
fn device_reads(dev: &str) -> u64 {
    let name = Path::new(dev)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let stat = fs::read_to_string(format!("/sys/block/{name}/stat")).unwrap();
    stat.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn s2_2_a2_a3_inactive_tier_is_left_alone() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::with_lowers("ext4", "ext4", "", |_, t1| {
        fs::create_dir_all(t1.join("cold/deep")).unwrap();
        fs::write(t1.join("unseen.txt"), b"never looked up").unwrap();
        fs::write(t1.join("seen.txt"), b"looked up before").unwrap();
        fs::write(t1.join("cold/deep/old.txt"), b"old").unwrap();
    });
    let mut c = Client::connect_pool(&uuid::Uuid::parse_str(p.pool.uuid()).unwrap()).unwrap();
    // A1 on the real pool.
    assert_eq!(set_mask(&mut c, &p.pool, "0x2"), "0x3");
    assert_eq!(set_mask(&mut c, &p.pool, "0xff"), "0x3");
    // Let the mount's first scrub pass finish before the mask goes down,
    // so what follows measures the namespace alone.
    let _ = fs::metadata(p.mnt("seen.txt")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while status_item(&mut c, &p.pool, "scrub_state") == "running" {
        assert!(
            std::time::Instant::now() < deadline,
            "the first scrub did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(set_mask(&mut c, &p.pool, "1"), "0x1");
    let skips_before: u64 = status_item(&mut c, &p.pool, "metadata_tier_skips")
        .parse()
        .unwrap();
    // A2
    let names: Vec<String> = fs::read_dir(p.mnt(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.contains(&"unseen.txt".to_string()), "{names:?}");
    assert_eq!(
        fs::metadata(p.mnt("unseen.txt"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOENT)
    );
    assert_eq!(
        fs::metadata(p.mnt("seen.txt")).unwrap().len(),
        16,
        "cached attributes"
    );
    let skips_after: u64 = status_item(&mut c, &p.pool, "metadata_tier_skips")
        .parse()
        .unwrap();
    assert!(
        skips_after > skips_before,
        "{skips_before} -> {skips_after}"
    );
    // A3: no read on tier 1's device for ls -lR and PRUNE_DIRS.
    // Page cache, dentries and inodes.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    let reads = device_reads(p.t1.dev());
    cmd_ok("ls", &["-lR", p.mnt("").to_str().unwrap()]);
    let r = c.request(Command::PruneDirs, &pool_req(&p.pool));
    assert!(r.is_ok(), "PRUNE_DIRS: {:?}", r.err());
    assert_eq!(
        device_reads(p.t1.dev()),
        reads,
        "tier 1 was read while inactive"
    );
    // Back to 0x3: everything is visible again.
    assert_eq!(set_mask(&mut c, &p.pool, "0x3"), "0x3");
    assert_eq!(fs::read(p.mnt("unseen.txt")).unwrap(), b"never looked up");
    assert_eq!(fs::read(p.mnt("cold/deep/old.txt")).unwrap(), b"old");
}
