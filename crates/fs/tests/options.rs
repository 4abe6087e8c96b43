//! S1.1 filesystem checks on real directories.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use smoothfs_fs::options::MountOptions;

const U: &str = "0F3C2A6E-9B1D-4C8E-A2F0-5D6B7C8E9FA1";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        Fixture { dir }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
    fn mnt(&self) -> PathBuf {
        self.path("mnt")
    }
    fn parse(&self, tiers: &[&Path], extra: &str) -> smoothfs_fs::Result<MountOptions> {
        let t: Vec<String> = tiers.iter().map(|p| p.display().to_string()).collect();
        MountOptions::parse(
            "none",
            &self.mnt(),
            &format!("pool=tank,uuid={U},tiers={}{extra}", t.join(":")),
        )
    }
}

#[test]
fn a1_nine_existing_tiers_is_e2big() {
    let f = Fixture::new();
    let tiers: Vec<PathBuf> = (0..9).map(|i| f.mkdir(&format!("t{i}"))).collect();
    let refs: Vec<&Path> = tiers.iter().map(|p| p.as_path()).collect();
    assert_eq!(f.parse(&refs, "").unwrap_err().errno, libc::E2BIG);
    assert_eq!(f.parse(&refs[..8], "").unwrap().tiers.len(), 8);
}

#[test]
fn a4_uppercase_uuid_is_canonical_lowercase() {
    let f = Fixture::new();
    let a = f.mkdir("a");
    let m = f.parse(&[&a], "").unwrap();
    assert_eq!(m.uuid_string(), U.to_ascii_lowercase());
}

#[test]
fn a5_empty_components_give_two_tiers() {
    let f = Fixture::new();
    let a = f.mkdir("a");
    let b = f.mkdir("b");
    let opts = format!("pool=tank,uuid={U},tiers={}::{}", a.display(), b.display());
    let m = MountOptions::parse("none", &f.mnt(), &opts).unwrap();
    assert_eq!(m.tiers.len(), 2);
    assert_eq!(m.tier_args, vec![a, b]);
    assert_eq!(m.source, "none");
}

#[test]
fn a6_missing_tier_is_enoent() {
    let f = Fixture::new();
    let e = f.parse(&[&f.path("nope")], "").unwrap_err();
    assert_eq!(e.errno, libc::ENOENT);
    assert!(e.msg.contains("nope"), "{}", e.msg);
}

#[test]
fn a6_regular_file_tier_is_enotdir() {
    let f = Fixture::new();
    let file = f.path("file");
    std::fs::write(&file, b"x").unwrap();
    assert_eq!(f.parse(&[&file], "").unwrap_err().errno, libc::ENOTDIR);
}

#[test]
fn a6_symlink_to_same_tier_is_einval() {
    let f = Fixture::new();
    let a = f.mkdir("a");
    let link = f.path("link-to-a");
    symlink(&a, &link).unwrap();
    let e = f.parse(&[&a, &link], "").unwrap_err();
    assert_eq!(e.errno, libc::EINVAL);
    assert!(e.msg.contains("same directory"), "{}", e.msg);
}

#[test]
fn symlinked_tier_resolves() {
    let f = Fixture::new();
    let a = f.mkdir("real/a");
    let link = f.path("link");
    symlink(&a, &link).unwrap();
    let m = f.parse(&[&link], "").unwrap();
    assert_eq!(m.tiers[0], std::fs::canonicalize(&a).unwrap());
    assert_eq!(m.tier_args[0], link);
}

#[test]
fn bind_mount_style_same_inode_is_einval() {
    // Same directory reached through two distinct non-symlink paths is
    // covered by dev/ino; here via a path with a '..' that realpath folds.
    let f = Fixture::new();
    let a = f.mkdir("a");
    f.mkdir("b");
    let also_a = f.path("b/../a");
    assert_eq!(f.parse(&[&a, &also_a], "").unwrap_err().errno, libc::EINVAL);
}

#[test]
fn tier_inside_tier_is_einval() {
    let f = Fixture::new();
    let a = f.mkdir("a");
    let inner = f.mkdir("a/inner");
    let e = f.parse(&[&a, &inner], "").unwrap_err();
    assert_eq!(e.errno, libc::EINVAL);
    assert!(e.msg.contains("inside"), "{}", e.msg);
    assert_eq!(f.parse(&[&inner, &a], "").unwrap_err().errno, libc::EINVAL);
    // A sibling whose name shares a prefix is not inside.
    let ab = f.mkdir("ab");
    assert!(f.parse(&[&a, &ab], "").is_ok());
}

#[test]
fn mountpoint_inside_tier_is_einval() {
    let f = Fixture::new();
    let a = f.mkdir("a");
    let mnt = f.mkdir("a/mnt");
    let opts = format!("pool=tank,uuid={U},tiers={}", a.display());
    let e = MountOptions::parse("none", &mnt, &opts).unwrap_err();
    assert_eq!(e.errno, libc::EINVAL);
    assert!(e.msg.contains("mountpoint"), "{}", e.msg);
    // The mountpoint being the tier itself is refused too.
    assert_eq!(
        MountOptions::parse("none", &a, &opts).unwrap_err().errno,
        libc::EINVAL
    );
}

#[test]
fn tier_inside_mountpoint_is_einval() {
    let f = Fixture::new();
    let t = f.mkdir("mnt/t");
    let e = f.parse(&[&t], "").unwrap_err();
    assert_eq!(e.errno, libc::EINVAL);
    assert!(e.msg.contains("inside the mountpoint"), "{}", e.msg);
}

#[test]
fn missing_mountpoint_is_enoent() {
    let f = Fixture::new();
    let a = f.mkdir("a");
    let opts = format!("pool=tank,uuid={U},tiers={}", a.display());
    let e = MountOptions::parse("none", &f.path("nomnt"), &opts).unwrap_err();
    assert_eq!(e.errno, libc::ENOENT);
}

#[test]
fn a7_unknown_option_and_ignored_options() {
    let f = Fixture::new();
    let a = f.mkdir("a");
    let e = f.parse(&[&a], ",foo=1").unwrap_err();
    assert_eq!(e.errno, libc::EINVAL);
    assert!(e.msg.contains("foo"));
    let m = f
        .parse(&[&a], ",nofail,x-systemd.automount,_netdev")
        .unwrap();
    assert!(m.flags.is_empty());
}

#[test]
fn a2_missing_keys_fail_before_touching_tiers() {
    let f = Fixture::new();
    let e = MountOptions::parse("none", &f.mnt(), "pool=tank,tiers=/does/not/exist").unwrap_err();
    assert_eq!(e.errno, libc::EINVAL);
    assert!(e.msg.contains("uuid"));
}
