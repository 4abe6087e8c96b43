//! S1.3 capability probe on real filesystems.
//!
//! The loop-device tests need root and /dev/loop-control; without them they
//! print why and return early (reported in the output, never silently).

use std::path::{Path, PathBuf};
use std::process::Command;

use smoothfs_fs::probe::{REQUIRED_CAPS, TierCaps, cap_names, caps, probe_caps, probe_tier};

fn describe(label: &str, c: &TierCaps) {
    println!(
        "PROBE {label}: caps=0x{:04x} [{}]; failed: {:?}",
        c.mask,
        cap_names(c.mask).join(","),
        c.failed
            .iter()
            .map(|f| format!("{}: {}", f.name, f.detail))
            .collect::<Vec<_>>()
    );
}

fn probe_dirs_left(tier: &Path) -> Vec<String> {
    match std::fs::read_dir(tier.join(".smoothfs")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("probe-"))
            .collect(),
        Err(_) => vec![],
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Root and a loop device, or the reason the test cannot run.
fn loop_skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root");
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control");
    }
    None
}

macro_rules! require_loop {
    ($name:expr) => {
        if let Some(reason) = loop_skip_reason() {
            println!("SKIPPED {}: {}", $name, reason);
            return;
        }
    };
}

/// A loop-backed filesystem image mounted on a tempdir; unmounted and
/// detached on drop, also when the test fails.
struct LoopFs {
    _dir: tempfile::TempDir,
    img: PathBuf,
    dev: Option<String>,
    mnt: PathBuf,
    mounted: bool,
}

impl LoopFs {
    fn new(size: &str, mkfs: &[&str], mount_opts: &str) -> LoopFs {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mut fs = LoopFs {
            _dir: dir,
            img,
            dev: None,
            mnt,
            mounted: false,
        };
        run("truncate", &["-s", size, fs.img.to_str().unwrap()]).unwrap();
        let mut args: Vec<&str> = mkfs[1..].to_vec();
        args.push(fs.img.to_str().unwrap());
        run(mkfs[0], &args).unwrap_or_else(|e| panic!("{e} (is the mkfs tool installed?)"));
        fs.dev = Some(run("losetup", &["-f", "--show", fs.img.to_str().unwrap()]).unwrap());
        let dev = fs.dev.clone().unwrap();
        run("mount", &["-o", mount_opts, &dev, fs.mnt.to_str().unwrap()]).unwrap();
        fs.mounted = true;
        fs
    }

    fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted && run("umount", &[self.mnt.to_str().unwrap_or("")]).is_err() {
            let _ = run("umount", &["-l", self.mnt.to_str().unwrap_or("")]);
        }
        if let Some(dev) = &self.dev {
            let _ = run("losetup", &["-d", dev]);
        }
    }
}

#[test]
fn probe_on_tmp_tempdir() {
    let dir = tempfile::tempdir().unwrap();
    let fstype = run("stat", &["-f", "-c", "%T", dir.path().to_str().unwrap()]).unwrap_or_default();
    let c = probe_caps(dir.path()).unwrap();
    describe(&format!("/tmp tempdir ({fstype})"), &c);
    assert!(probe_dirs_left(dir.path()).is_empty());
}

#[test]
fn a5_leftover_probe_dirs_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join(".smoothfs/probe-deadbeef/sub");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("f"), b"x").unwrap();
    std::fs::write(dir.path().join(".smoothfs/probe-file"), b"x").unwrap();
    std::fs::write(dir.path().join(".smoothfs/keep"), b"x").unwrap();
    let _ = probe_caps(dir.path()).unwrap();
    assert!(probe_dirs_left(dir.path()).is_empty());
    assert!(dir.path().join(".smoothfs/keep").exists());
}

#[test]
fn missing_tier_is_enoent() {
    let dir = tempfile::tempdir().unwrap();
    let e = probe_caps(&dir.path().join("nope")).unwrap_err();
    assert_eq!(e.errno, libc::ENOENT);
}

#[test]
fn a1_ext4_has_required_bits() {
    require_loop!("S1.3/A1 ext4");
    let fs = LoopFs::new("64M", &["mkfs.ext4", "-q", "-F"], "rw");
    let c = probe_tier(0, fs.path()).unwrap();
    describe("ext4", &c);
    assert_eq!(c.mask & REQUIRED_CAPS, REQUIRED_CAPS);
    assert!(c.has(caps::POSIX_ACL) && c.has(caps::DIRECT_IO) && c.has(caps::SPARSE_SEEK));
    assert!(c.has(caps::INODE_GENERATION));
    assert!(probe_dirs_left(fs.path()).is_empty());
}

#[test]
fn a1_xfs_has_required_bits_and_reflink() {
    require_loop!("S1.3/A1 xfs");
    let fs = LoopFs::new("512M", &["mkfs.xfs", "-q", "-f", "-m", "reflink=1"], "rw");
    let c = probe_tier(1, fs.path()).unwrap();
    describe("xfs", &c);
    assert_eq!(c.mask & REQUIRED_CAPS, REQUIRED_CAPS);
    assert!(
        c.has(caps::REFLINK),
        "xfs with reflink=1 must report reflink"
    );
    assert!(c.has(caps::COPY_FILE_RANGE));
    assert!(probe_dirs_left(fs.path()).is_empty());
}

#[test]
fn a2_vfat_is_eopnotsupp_naming_xattr_trusted() {
    require_loop!("S1.3/A2 vfat");
    if !kernel_has_fs("vfat") {
        println!(
            "SKIPPED S1.3/A2 vfat: this kernel has no vfat driver (/proc/filesystems); \
             the same property is checked on ramfs by a2_xattrless_ramfs_is_eopnotsupp_naming_xattr_trusted"
        );
        return;
    }
    let fs = LoopFs::new("64M", &["mkfs.vfat"], "rw");
    let e = probe_tier(2, fs.path()).unwrap_err();
    println!("PROBE vfat: {} {}", e.errno_name(), e.msg);
    assert_eq!(e.errno, libc::EOPNOTSUPP, "{}", e.msg);
    assert!(e.msg.contains("xattr_trusted"), "{}", e.msg);
    assert!(e.msg.contains("tier 2"), "{}", e.msg);
    assert!(e.msg.contains(fs.path().to_str().unwrap()), "{}", e.msg);
    assert!(e.msg.contains("0x0173"), "{}", e.msg);
    assert!(probe_dirs_left(fs.path()).is_empty());
}

fn kernel_has_fs(name: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|t| t.lines().any(|l| l.split_whitespace().last() == Some(name)))
}

/// Mounts a nodev filesystem (tmpfs, ramfs) on a tempdir; unmounts on drop.
struct NodevFs {
    dir: tempfile::TempDir,
}

impl NodevFs {
    fn new(fstype: &str, opts: &str) -> NodevFs {
        let dir = tempfile::tempdir().unwrap();
        run(
            "mount",
            &[
                "-t",
                fstype,
                "-o",
                opts,
                fstype,
                dir.path().to_str().unwrap(),
            ],
        )
        .unwrap();
        NodevFs { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NodevFs {
    fn drop(&mut self) {
        let _ = run("umount", &[self.dir.path().to_str().unwrap_or("")]);
    }
}

/// S1.3/A2's property (a filesystem without trusted xattrs is refused with
/// EOPNOTSUPP naming xattr_trusted) on ramfs, which has no xattr support.
#[test]
fn a2_xattrless_ramfs_is_eopnotsupp_naming_xattr_trusted() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED S1.3/A2 ramfs: not running as root");
        return;
    }
    let fs = NodevFs::new("ramfs", "mode=0755");
    let e = probe_tier(1, fs.path()).unwrap_err();
    println!("PROBE ramfs: {} {}", e.errno_name(), e.msg);
    assert_eq!(e.errno, libc::EOPNOTSUPP, "{}", e.msg);
    assert!(e.msg.contains("xattr_trusted"), "{}", e.msg);
    assert!(e.msg.contains("xattr_user"), "{}", e.msg);
    assert!(probe_dirs_left(fs.path()).is_empty());
}

#[test]
fn a3_tmpfs_is_accepted() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED S1.3/A3 tmpfs: not running as root");
        return;
    }
    let fs = NodevFs::new("tmpfs", "size=64m");
    let c = probe_caps(fs.path()).unwrap();
    describe("tmpfs", &c);
    // Kernels with tmpfs user xattrs (>= 6.6) pass the required set.
    assert_eq!(c.mask & REQUIRED_CAPS, REQUIRED_CAPS, "{:?}", c.failed);
    probe_tier(0, fs.path()).unwrap();
}

#[test]
fn a4_read_only_ext4_is_erofs() {
    require_loop!("S1.3/A4 read-only ext4");
    let fs = LoopFs::new("64M", &["mkfs.ext4", "-q", "-F"], "ro");
    let e = probe_tier(0, fs.path()).unwrap_err();
    println!("PROBE ro ext4: {} {}", e.errno_name(), e.msg);
    assert_eq!(e.errno, libc::EROFS, "{}", e.msg);
}

#[test]
fn a4_read_only_ext4_with_existing_internal_dir_is_erofs() {
    require_loop!("S1.3/A4 read-only ext4 (existing .smoothfs)");
    let fs = LoopFs::new("64M", &["mkfs.ext4", "-q", "-F"], "rw");
    std::fs::create_dir(fs.path().join(".smoothfs")).unwrap();
    run("mount", &["-o", "remount,ro", fs.path().to_str().unwrap()]).unwrap();
    let e = probe_tier(0, fs.path()).unwrap_err();
    assert_eq!(e.errno, libc::EROFS, "{}", e.msg);
}
