//! Self-tests of the test harness (tests/common): loop-backed tiers and the
//! mount-table helpers work and clean up after themselves. They need root,
//! loop devices and mkfs, but no smoothfs data plane.

mod common;

use std::fs;
use std::panic;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

fn loop_devices_backed_by(image: &std::path::Path) -> String {
    let out = cmd("losetup", &["-j", &image.to_string_lossy()]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn check_tier_lifecycle(fs_type: &str) {
    let tier = LoopTier::new(fs_type, 512);
    let root = tier.path().to_path_buf();
    let image = tier.image();
    let dir = image.parent().unwrap().to_path_buf();

    assert_eq!(fstype_at(&root).as_deref(), Some(fs_type));
    assert!(tier.dev().starts_with("/dev/loop"), "{}", tier.dev());
    assert!(loop_devices_backed_by(&image).contains(tier.dev()));

    // trusted.* and user.* xattrs work on the lower (TESTING.md).
    let f = tier.join("probe");
    fs::write(&f, b"hello").unwrap();
    set_xattr(&f, "trusted.smoothfs.test", b"x").unwrap();
    set_xattr(&f, "user.test", b"y").unwrap();
    assert_eq!(get_xattr(&f, "trusted.smoothfs.test").unwrap(), b"x");
    assert!(list_xattr(&f).unwrap().contains(&"user.test".to_owned()));

    fill_to_pct(&root, 98);
    let used = used_pct(&root);
    assert!(
        (98.0..99.9).contains(&used),
        "{fs_type} filled to {used:.2}%"
    );

    let dev = tier.dev().to_owned();
    drop(tier);
    assert!(
        mounts_at(&root).is_empty(),
        "{} still mounted",
        root.display()
    );
    assert!(!dir.exists(), "{} not removed", dir.display());
    // LoopTier's drop waits for the deferred detach to finish.
    let still = String::from_utf8_lossy(&cmd("losetup", &["-a"]).stdout).into_owned();
    assert!(
        !still.contains(&*image.to_string_lossy()),
        "{dev} still attached to {}: {still}",
        image.display()
    );
}

#[test]
fn loop_tier_harness_mounts_and_cleans_up() {
    if !require_root_and_fuse() {
        return;
    }
    check_tier_lifecycle("ext4");
}

#[test]
fn loop_tier_harness_supports_xfs() {
    if !require_root_and_fuse() {
        return;
    }
    check_tier_lifecycle("xfs");
}

#[test]
fn loop_tier_is_released_when_a_test_panics() {
    if !require_root_and_fuse() {
        return;
    }
    let mut seen: Option<(PathBuf, PathBuf)> = None;
    let result = panic::catch_unwind(panic::AssertUnwindSafe(|| {
        let tier = LoopTier::new("ext4", 64);
        // An open file on the tier forces the lazy-unmount path.
        let busy = fs::File::create(tier.join("busy")).unwrap();
        seen = Some((tier.path().to_path_buf(), tier.image()));
        let _keep = busy;
        panic!("deliberate failure inside a test");
    }));
    assert!(result.is_err());
    let (root, image) = seen.unwrap();
    assert!(mounts_at(&root).is_empty());
    assert!(!image.exists());
}

/// The helpers `Pool` relies on (mount table polling, unmount, process
/// lookup by command line) checked against another FUSE filesystem.
#[test]
fn mount_table_helpers_track_a_fuse_mount() {
    if !require_root_and_fuse() {
        return;
    }
    if cmd("sh", &["-c", "command -v mergerfs"]).status.code() != Some(0) {
        assert!(
            !in_ci(),
            "mergerfs missing; scripts/install-deps.sh installs it"
        );
        eprintln!("SKIPPED: mergerfs not installed");
        return;
    }
    let t0 = LoopTier::new("ext4", 64);
    let t1 = LoopTier::new("ext4", 64);
    let mnt = scratch_dir("smoothfs-harness-mnt-");
    let branches = format!("{}:{}", t0.path().display(), t1.path().display());
    let mut child = std::process::Command::new("mergerfs")
        .args([
            "-f",
            "-o",
            "allow_other,fsname=harness-check,minfreespace=0,category.create=ff",
        ])
        .arg(&branches)
        .arg(mnt.path())
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn mergerfs");
    let _guard = MountGuard {
        path: mnt.path().to_path_buf(),
        needle: String::new(),
    };
    let deadline = std::time::Instant::now() + MOUNT_TIMEOUT;
    while fstype_at(mnt.path()).as_deref() != Some("fuse.mergerfs") {
        assert!(
            std::time::Instant::now() < deadline,
            "mergerfs never mounted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let entry = mounts_at(mnt.path()).pop().unwrap();
    assert_eq!(entry.source, "harness-check");
    assert!(!pids_with_cmdline(&mnt.path().to_string_lossy()).is_empty());

    fs::write(mnt.path().join("x"), b"through fuse").unwrap();
    assert_eq!(tiers_holding(&[t0.path(), t1.path()], "x"), vec![0]);

    assert!(unmount_path(mnt.path()));
    let (status, killed) = wait_with_deadline(&mut child, EXIT_TIMEOUT);
    assert!(!killed && status.success(), "mergerfs exit: {status}");
    assert!(wait_no_process_with(&mnt.path().to_string_lossy(), EXIT_TIMEOUT).is_ok());
}

#[test]
fn pattern_and_hash_helpers_are_deterministic() {
    assert_eq!(pattern(1000, 7), pattern(1000, 7));
    assert_ne!(pattern(1000, 7), pattern(1000, 8));
    assert_eq!(
        sha256_bytes(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let oid = [0u8; 16];
    assert_eq!(ino_from_oid(&oid) >> 63, 1);
}
