//! S1: the mount contract — option validation (S1.1), the mount helper
//! (S1.4) and statfs (S1.5).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use tempfile::TempDir;

/// Plain directories usable as tiers for validation tests: the options are
/// rejected before any tier is probed, so no loop device is needed.
struct Dirs {
    root: TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        Dirs {
            root: scratch_dir("smoothfs-opts-"),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        let p = self.root.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn mountpoint(&self) -> PathBuf {
        self.dir("mnt")
    }
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn tiers_opt(tiers: &[&Path]) -> String {
    let parts: Vec<String> = tiers.iter().map(|t| t.display().to_string()).collect();
    parts.join(":")
}

#[test]
fn mount_without_uuid_fails_with_einval_naming_uuid() {
    let d = Dirs::new();
    let opts = format!("pool=p,tiers={}", tiers_opt(&[&d.dir("a"), &d.dir("b")]));
    smoothfs_mount_once(&opts, &d.mountpoint()).assert_failed_with("EINVAL", &["uuid"]);
}

#[test]
fn mount_without_pool_or_tiers_fails_with_einval_naming_each() {
    let d = Dirs::new();
    let u = uuid();
    let tiers = tiers_opt(&[&d.dir("a"), &d.dir("b")]);
    smoothfs_mount_once(&format!("uuid={u},tiers={tiers}"), &d.mountpoint())
        .assert_failed_with("EINVAL", &["pool"]);
    smoothfs_mount_once(&format!("pool=p,uuid={u}"), &d.mountpoint())
        .assert_failed_with("EINVAL", &["tiers"]);
    smoothfs_mount_once("rw", &d.mountpoint())
        .assert_failed_with("EINVAL", &["pool", "uuid", "tiers"]);
}

#[test]
fn mount_with_nine_tiers_fails_with_e2big() {
    let d = Dirs::new();
    let dirs: Vec<PathBuf> = (0..9).map(|i| d.dir(&format!("t{i}"))).collect();
    let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let opts = format!("pool=p,uuid={},tiers={}", uuid(), tiers_opt(&refs));
    smoothfs_mount_once(&opts, &d.mountpoint()).assert_failed_with("E2BIG", &[]);
}

#[test]
fn mount_with_unknown_option_fails_with_einval_naming_it_and_leaves_no_daemon() {
    let d = Dirs::new();
    let u = uuid();
    let opts = format!(
        "pool=p,uuid={u},tiers={},foo=1",
        tiers_opt(&[&d.dir("a"), &d.dir("b")])
    );
    let attempt = smoothfs_mount_once(&opts, &d.mountpoint());
    attempt.assert_failed_with("EINVAL", &["foo"]);
    assert!(
        attempt.leftover_pids.is_empty(),
        "daemon left behind: {attempt:#?}"
    );
    assert!(
        pids_with_cmdline(&u).is_empty(),
        "a process still names the pool uuid"
    );
    let socket = PathBuf::from(format!("/run/smoothfs/{u}.sock"));
    assert!(!socket.exists(), "{} left behind", socket.display());
}

#[test]
fn mount_with_bad_pool_name_fails_with_einval() {
    let d = Dirs::new();
    let tiers = tiers_opt(&[&d.dir("a"), &d.dir("b")]);
    let long = "a".repeat(64);
    for name in ["Tank", long.as_str()] {
        let opts = format!("pool={name},uuid={},tiers={tiers}", uuid());
        smoothfs_mount_once(&opts, &d.mountpoint()).assert_failed_with("EINVAL", &[]);
    }
}

#[test]
fn mount_with_bad_uuid_fails_with_einval() {
    let d = Dirs::new();
    let tiers = tiers_opt(&[&d.dir("a"), &d.dir("b")]);
    for u in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        let opts = format!("pool=p,uuid={u},tiers={tiers}");
        smoothfs_mount_once(&opts, &d.mountpoint()).assert_failed_with("EINVAL", &["uuid"]);
    }
}

#[test]
fn mount_with_missing_tier_fails_with_enoent() {
    let d = Dirs::new();
    let missing = d.root.path().join("does-not-exist");
    let opts = format!(
        "pool=p,uuid={},tiers={}",
        uuid(),
        tiers_opt(&[&d.dir("a"), &missing])
    );
    smoothfs_mount_once(&opts, &d.mountpoint()).assert_failed_with("ENOENT", &[]);
}

#[test]
fn mount_with_regular_file_as_tier_fails_with_enotdir() {
    let d = Dirs::new();
    let file = d.root.path().join("plain-file");
    fs::write(&file, b"not a directory").unwrap();
    let opts = format!(
        "pool=p,uuid={},tiers={}",
        uuid(),
        tiers_opt(&[&d.dir("a"), &file])
    );
    smoothfs_mount_once(&opts, &d.mountpoint()).assert_failed_with("ENOTDIR", &[]);
}

#[test]
fn mount_with_relative_tier_fails_with_einval() {
    let d = Dirs::new();
    let opts = format!(
        "pool=p,uuid={},tiers={}:relative/dir",
        uuid(),
        d.dir("a").display()
    );
    smoothfs_mount_once(&opts, &d.mountpoint()).assert_failed_with("EINVAL", &[]);
}

#[test]
fn mount_with_the_same_tier_twice_fails_with_einval() {
    let d = Dirs::new();
    let a = d.dir("a");
    let link = d.root.path().join("link-to-a");
    symlink(&a, &link).unwrap();
    for second in [a.clone(), link] {
        let opts = format!("pool=p,uuid={},tiers={}", uuid(), tiers_opt(&[&a, &second]));
        smoothfs_mount_once(&opts, &d.mountpoint()).assert_failed_with("EINVAL", &[]);
    }
}

#[test]
fn mount_with_tier_inside_another_tier_fails_with_einval() {
    let d = Dirs::new();
    let a = d.dir("a");
    let inner = d.dir("a/inner");
    let opts = format!("pool=p,uuid={},tiers={}", uuid(), tiers_opt(&[&a, &inner]));
    smoothfs_mount_once(&opts, &d.mountpoint()).assert_failed_with("EINVAL", &[]);
}

/// `/sbin/mount.fuse.smoothfs` pointing at the binary under test, for as
/// long as the guard lives; an existing helper is left as it is.
struct HelperLink {
    created: Option<PathBuf>,
}

impl HelperLink {
    fn ensure() -> HelperLink {
        let link = Path::new("/sbin/mount.fuse.smoothfs");
        if fs::symlink_metadata(link).is_ok() {
            let target = fs::read_link(link).map(|t| t.display().to_string());
            eprintln!("using existing {} -> {target:?}", link.display());
            return HelperLink { created: None };
        }
        symlink(SMOOTHFS, link).unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
        HelperLink {
            created: Some(link.to_path_buf()),
        }
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        if let Some(link) = &self.created {
            let _ = fs::remove_file(link);
        }
    }
}

#[test]
fn mount_helper_mounts_type_fuse_smoothfs_and_umount_stops_the_daemon() {
    if !require_root_and_fuse() {
        return;
    }
    let t0 = LoopTier::new("ext4", 512);
    let t1 = LoopTier::new("ext4", 512);
    let _helper = HelperLink::ensure();
    let mnt = scratch_dir("smoothfs-helper-mnt-");
    let u = uuid();
    let _guard = MountGuard {
        path: mnt.path().to_path_buf(),
        needle: u.clone(),
    };
    let opts = format!(
        "pool=helper,uuid={u},tiers={}",
        tiers_opt(&[t0.path(), t1.path()])
    );
    let args = [
        OsStr::new("-t"),
        OsStr::new("fuse.smoothfs"),
        OsStr::new("none"),
        mnt.path().as_os_str(),
        OsStr::new("-o"),
        OsStr::new(&opts),
    ];
    let (code, out, err) = cmd_timeout("mount", &args, Duration::from_secs(30));
    assert_eq!(
        code,
        Some(0),
        "mount -t fuse.smoothfs failed\nstdout: {out}\nstderr: {err}"
    );

    let fstype = cmd_ok(
        "findmnt",
        &[
            OsStr::new("-no"),
            OsStr::new("FSTYPE"),
            mnt.path().as_os_str(),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&fstype.stdout).trim(), FSTYPE);
    let source = cmd_ok(
        "findmnt",
        &[
            OsStr::new("-no"),
            OsStr::new("SOURCE"),
            mnt.path().as_os_str(),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&source.stdout).trim(), "none");

    // The mount is usable as soon as the helper returns.
    fs::write(mnt.path().join("hello"), b"through the helper").unwrap();
    assert_eq!(
        fs::read(mnt.path().join("hello")).unwrap(),
        b"through the helper"
    );

    let (code, _, err) = cmd_timeout("umount", &[mnt.path()], Duration::from_secs(30));
    assert_eq!(code, Some(0), "umount failed: {err}");
    assert!(mounts_at(mnt.path()).is_empty());
    if let Err(pids) = wait_no_process_with(&u, EXIT_TIMEOUT) {
        panic!("daemon still running {EXIT_TIMEOUT:?} after umount: {pids:?}");
    }
}

#[test]
fn foreground_mount_exits_zero_after_umount() {
    if !require_root_and_fuse() {
        return;
    }
    let t0 = LoopTier::new("ext4", 512);
    let t1 = LoopTier::new("ext4", 512);
    let mut pool = Pool::mount(&[t0.path(), t1.path()], "");
    assert_eq!(fstype_at(pool.path()).as_deref(), Some(FSTYPE));
    let status = pool.unmount();
    assert!(
        status.success(),
        "daemon exit status {status}\n{}",
        pool.log()
    );
}

#[test]
fn statfs_reports_the_sum_of_the_tiers() {
    if !require_root_and_fuse() {
        return;
    }
    let t0 = LoopTier::new("ext4", 512);
    let t1 = LoopTier::new("xfs", 512);
    fill_to_pct(t0.path(), 30);
    fill_to_pct(t1.path(), 60);
    let pool = Pool::mount(&[t0.path(), t1.path()], "");
    fs::write(pool.join("some-data"), pattern(1 << 20, 1)).unwrap();
    unsafe { libc::sync() };

    // In 4096-byte blocks, as `df -B4096` shows them.
    let sums = || {
        let mut s = [0u64; 3];
        for t in [&t0, &t1] {
            let v = t.statvfs();
            let k = v.f_frsize / 4096;
            s[0] += v.f_blocks * k;
            s[1] += v.f_bfree * k;
            s[2] += v.f_bavail * k;
        }
        s
    };
    let before = sums();
    let m = statvfs(pool.path()).unwrap();
    let after = sums();
    assert_eq!(m.f_bsize, 4096, "f_bsize");
    assert_eq!(m.f_frsize, 4096, "f_frsize");
    let got = [m.f_blocks, m.f_bfree, m.f_bavail];
    let tolerance = 2 * 2; // 2 blocks per tier
    for (i, field) in ["f_blocks", "f_bfree", "f_bavail"].iter().enumerate() {
        let lo = before[i].min(after[i]).saturating_sub(tolerance);
        let hi = before[i].max(after[i]) + tolerance;
        assert!(
            (lo..=hi).contains(&got[i]),
            "{field}: mount {} vs tiers {}..{}",
            got[i],
            before[i],
            after[i]
        );
    }
    let namelen = t0.statvfs().f_namemax.min(t1.statvfs().f_namemax);
    assert_eq!(
        m.f_namemax, namelen,
        "f_namemax is the smallest of the tiers"
    );
}
