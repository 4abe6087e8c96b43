//! The copy module on real files (S10.3, S10.4, S10.2 W8): sparse files stay
//! sparse, metadata survives, checksums are verified, cancel and throttle
//! work. Needs no mount; the metadata and reflink tests need root and say
//! `SKIPPED` otherwise.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{IFlags, Timespec, Timestamps, XattrFlags};
use smoothfs_control::copy::{
    self, CopyError, CopyMethod, CopyOptions, Staging, Throttle, copy_file, copy_into,
    verify_staging,
};

const MIB: u64 = 1 << 20;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn skip(reason: &str) {
    // Straight to stderr so it shows for a passing test too.
    eprintln!("SKIPPED: {reason}");
}

/// Deterministic non-zero bytes.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] | 1)
        .map(|b| b.wrapping_add(seed))
        .map(|b| if b == 0 { 1 } else { b })
        .collect()
}

fn write_file(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap();
    names.truncate(n);
    let mut out: Vec<(String, Vec<u8>)> = names
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| {
            let name = String::from_utf8_lossy(n).into_owned();
            let mut v = vec![0u8; 65536];
            let k = rustix::fs::lgetxattr(path, name.as_str(), &mut v[..]).unwrap();
            v.truncate(k);
            (name, v)
        })
        .collect();
    out.sort();
    out
}

fn no_progress() -> impl FnMut(u64, u64) {
    |_, _| {}
}

#[test]
fn sparse_64mib_file_with_1mib_data_stays_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("sparse");
    let f = File::create(&src).unwrap();
    f.set_len(64 * MIB).unwrap();
    f.write_all_at(&pattern(512 * 1024, 1), 5 * MIB).unwrap();
    f.write_all_at(&pattern(512 * 1024, 2), 40 * MIB).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let src_blocks = fs::metadata(&src).unwrap().blocks();

    for (name, opts) in [
        ("default", CopyOptions::default()),
        (
            "stream",
            CopyOptions {
                allow_reflink: false,
                allow_copy_file_range: false,
                ..CopyOptions::default()
            },
        ),
        (
            // W9's re-hash trails the sendfile copy chunk by chunk.
            "stream-rehash",
            CopyOptions {
                allow_reflink: false,
                allow_copy_file_range: false,
                rehash_source: true,
                chunk_bytes: 1 << 20,
                ..CopyOptions::default()
            },
        ),
    ] {
        let dst = dir.path().join(format!("staging-{name}"));
        let report = copy_file(&src, &dst, &opts, &mut no_progress()).unwrap();
        let m = fs::metadata(&dst).unwrap();
        assert_eq!(m.len(), 64 * MIB, "{name}: size");
        assert!(
            m.blocks() <= 2 * src_blocks,
            "{name}: staging has {} blocks, source {src_blocks}",
            m.blocks()
        );
        assert_eq!(report.bytes_total, 64 * MIB);
        assert!(
            report.bytes_copied <= 2 * MIB,
            "{name}: only data ranges are copied, not {}",
            report.bytes_copied
        );
        assert!(report.sparse_seek);
        let expected = blake3::hash(&fs::read(&src).unwrap()).to_hex().to_string();
        assert_eq!(
            report.blake3, expected,
            "{name}: hash covers holes as zeros"
        );
        assert_eq!(fs::read(&dst).unwrap(), fs::read(&src).unwrap());
        if name.starts_with("stream") {
            assert_eq!(report.method, CopyMethod::Stream);
        }
        let rehash = report.source_rehash.as_deref();
        if name == "stream-rehash" {
            assert_eq!(rehash, Some(expected.as_str()), "{name}: W9 re-hash");
            assert_eq!(report.staging_blake3.as_deref(), Some(expected.as_str()));
        } else {
            assert_eq!(rehash, None, "{name}: no re-hash asked for");
        }
    }
}

#[test]
fn explicit_zero_blocks_stay_allocated_when_the_source_reports_its_holes() {
    // A fully allocated file whose middle is explicit zeros: the source
    // reports its holes (SEEK_DATA/SEEK_HOLE), so its data ranges are
    // copied as they are -- zero blocks only become holes without
    // sparse_seek (S10.3/2), and space an application allocated stays
    // allocated after a move.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("zeros");
    let mut data = pattern(8 * MIB as usize, 3);
    data[MIB as usize..7 * MIB as usize].fill(0);
    write_file(&src, &data);
    let src_blocks = fs::metadata(&src).unwrap().blocks();
    let dst = dir.path().join("staging");
    let opts = CopyOptions {
        allow_reflink: false,
        allow_copy_file_range: false,
        ..CopyOptions::default()
    };
    let report = copy_file(&src, &dst, &opts, &mut no_progress()).unwrap();
    assert_eq!(report.method, CopyMethod::Stream);
    assert_eq!(fs::read(&dst).unwrap(), data);
    let dst_blocks = fs::metadata(&dst).unwrap().blocks();
    assert_eq!(
        dst_blocks, src_blocks,
        "zero blocks inside a data range stay allocated"
    );
}

#[test]
fn copy_file_range_is_used_on_one_filesystem_without_reflink() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let data = pattern(3 * MIB as usize + 123, 4);
    write_file(&src, &data);
    let dst = dir.path().join("dst");
    let opts = CopyOptions {
        allow_reflink: false,
        ..CopyOptions::default()
    };
    let report = copy_file(&src, &dst, &opts, &mut no_progress()).unwrap();
    assert!(
        matches!(
            report.method,
            CopyMethod::CopyFileRange | CopyMethod::Stream
        ),
        "{:?}",
        report.method
    );
    assert_eq!(fs::read(&dst).unwrap(), data);
    assert_eq!(report.blake3, blake3::hash(&data).to_hex().to_string());
}

#[test]
fn empty_file_copies() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("empty");
    write_file(&src, b"");
    let dst = dir.path().join("staging");
    let report = copy_file(&src, &dst, &CopyOptions::default(), &mut no_progress()).unwrap();
    assert_eq!(report.bytes_total, 0);
    assert_eq!(report.blake3, blake3::hash(b"").to_hex().to_string());
    assert_eq!(fs::metadata(&dst).unwrap().len(), 0);
}

#[test]
fn staging_is_created_exclusively_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("staging");
    let s = Staging::create(&p).unwrap();
    assert_eq!(
        fs::metadata(s.path()).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let err = Staging::create(&p).unwrap_err();
    assert_eq!(err.errno(), libc::EEXIST, "{err}");
}

#[test]
fn metadata_is_preserved_mode_owner_xattrs_acl_flags_times() {
    if !is_root() {
        return skip("metadata test needs root (chown, trusted.* xattrs)");
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("meta");
    write_file(&src, &pattern(100_000, 5));
    // chown first: it clears setuid.
    std::os::unix::fs::chown(&src, Some(1000), Some(1000)).unwrap();
    rustix::fs::setxattr(&src, "user.x", b"1", XattrFlags::empty()).unwrap();
    rustix::fs::setxattr(
        &src,
        "trusted.smoothfs.oid",
        &[0xab; 16],
        XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(
        &src,
        "trusted.smoothfs.gen",
        &7u32.to_le_bytes(),
        XattrFlags::empty(),
    )
    .unwrap();
    // An ACL with a named-user entry for uid 1001 (S10.4/A5), in the
    // kernel's xattr format: version 2, then (tag u16, perm u16, id u32).
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 7u16, u32::MAX), // USER_OBJ rwx
        (0x02, 6, 1001),           // USER 1001 rw-
        (0x04, 5, u32::MAX),       // GROUP_OBJ r-x
        (0x10, 7, u32::MAX),       // MASK rwx
        (0x20, 0, u32::MAX),       // OTHER ---
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    let have_acl =
        rustix::fs::setxattr(&src, "system.posix_acl_access", &acl, XattrFlags::empty()).is_ok();
    if !have_acl {
        eprintln!("note: filesystem rejects POSIX ACLs; checking the rest");
    }
    fs::set_permissions(&src, fs::Permissions::from_mode(0o4750)).unwrap();
    let nodump = {
        let f = File::open(&src).unwrap();
        rustix::fs::ioctl_setflags(&f, IFlags::NODUMP).is_ok()
    };
    // mtime 2001-01-01T00:00:00.123456789Z, atime a day later.
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 978_393_600,
            tv_nsec: 987_654_321,
        },
        last_modification: Timespec {
            tv_sec: 978_307_200,
            tv_nsec: 123_456_789,
        },
    };
    rustix::fs::utimensat(rustix::fs::CWD, &src, &times, rustix::fs::AtFlags::empty()).unwrap();
    let before = fs::metadata(&src).unwrap();
    let src_x = xattrs(&src);

    let dst = dir.path().join("staging");
    copy_file(&src, &dst, &CopyOptions::default(), &mut no_progress()).unwrap();

    let s = fs::metadata(&src).unwrap();
    let d = fs::metadata(&dst).unwrap();
    assert_eq!(d.mode() & 0o7777, 0o4750, "mode with setuid");
    assert_eq!((d.uid(), d.gid()), (1000, 1000));
    assert_eq!((d.mtime(), d.mtime_nsec()), (978_307_200, 123_456_789));
    assert_eq!((d.atime(), d.atime_nsec()), (978_393_600, 987_654_321));
    // The source itself was not touched, atime included (O_NOATIME).
    assert_eq!(
        (s.atime(), s.atime_nsec()),
        (before.atime(), before.atime_nsec())
    );
    let dst_x = xattrs(&dst);
    assert_eq!(dst_x, src_x, "getfattr -d -m - output");
    let names: Vec<&str> = dst_x.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"user.x"));
    assert!(names.contains(&"trusted.smoothfs.oid"));
    assert!(names.contains(&"trusted.smoothfs.gen"));
    if have_acl {
        assert!(names.contains(&"system.posix_acl_access"));
    }
    if nodump {
        let f = File::open(&dst).unwrap();
        assert!(
            rustix::fs::ioctl_getflags(&f)
                .unwrap()
                .contains(IFlags::NODUMP)
        );
    }
}

#[test]
fn checksum_and_metadata_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let data = pattern(2 * MIB as usize, 6);
    write_file(&src, &data);

    // A good copy verifies, and its hash is the source's BLAKE3.
    let good = dir.path().join("good");
    let report = copy_file(&src, &good, &CopyOptions::default(), &mut no_progress()).unwrap();
    assert_eq!(report.blake3, blake3::hash(&data).to_hex().to_string());

    // One flipped byte in the staging file: checksum mismatch.
    let bad = dir.path().join("bad");
    let staging = Staging::create(&bad).unwrap();
    let mut report =
        copy_into(&src, &staging, &CopyOptions::default(), &mut no_progress()).unwrap();
    drop(staging);
    // copy_into read the staging file back already; the flip below comes
    // after that, so make verify_staging read it again.
    assert_eq!(
        report.staging_blake3.as_deref(),
        Some(report.blake3.as_str())
    );
    report.staging_blake3 = None;
    let mtime = fs::metadata(&bad).unwrap().modified().unwrap();
    let f = OpenOptions::new().write(true).open(&bad).unwrap();
    f.write_all_at(&[data[4096] ^ 0xff], 4096).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let err = verify_staging(&src, &bad, &report, None).unwrap_err();
    assert!(matches!(err, CopyError::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().starts_with("checksum mismatch"));
    // A read-back hash that differs from the source's: mismatch as well.
    report.staging_blake3 = Some(blake3::hash(b"other").to_hex().to_string());
    let err = verify_staging(&src, &good, &report, None).unwrap_err();
    assert!(matches!(err, CopyError::ChecksumMismatch { .. }), "{err}");

    // Right bytes, wrong mode: metadata mismatch.
    let meta = dir.path().join("meta");
    let staging = Staging::create(&meta).unwrap();
    let report = copy_into(&src, &staging, &CopyOptions::default(), &mut no_progress()).unwrap();
    drop(staging);
    fs::set_permissions(&meta, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o644)).unwrap();
    let err = verify_staging(&src, &meta, &report, None).unwrap_err();
    assert!(matches!(err, CopyError::MetadataMismatch(_)), "{err}");
    assert!(err.to_string().starts_with("metadata mismatch"), "{err}");

    // An xattr the source lacks: metadata mismatch too.
    let extra = dir.path().join("extra");
    let staging = Staging::create(&extra).unwrap();
    let report = copy_into(&src, &staging, &CopyOptions::default(), &mut no_progress()).unwrap();
    drop(staging);
    let mtime = fs::metadata(&extra).unwrap().modified().unwrap();
    if rustix::fs::setxattr(&extra, "user.extra", b"y", XattrFlags::empty()).is_ok() {
        File::options()
            .write(true)
            .open(&extra)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let err = verify_staging(&src, &extra, &report, None).unwrap_err();
        assert!(err.to_string().contains("user.extra"), "{err}");
    }
}

#[test]
fn progress_reports_start_and_end() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_file(&src, &pattern(3 * MIB as usize, 7));
    let mut calls = Vec::new();
    copy_file(
        &src,
        &dir.path().join("dst"),
        &CopyOptions::default(),
        &mut |d, t| calls.push((d, t)),
    )
    .unwrap();
    assert_eq!(calls.first(), Some(&(0, 3 * MIB)));
    assert_eq!(calls.last(), Some(&(3 * MIB, 3 * MIB)));
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "monotonic");
}

#[test]
fn cancel_stops_the_copy_and_leaves_the_staging_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let data = pattern(32 * MIB as usize, 8);
    write_file(&src, &data);
    let dst = dir.path().join("staging");
    let cancel = Arc::new(AtomicBool::new(false));
    let opts = CopyOptions {
        // Slow enough that the copy is still running when cancelled.
        throttle: Some(Arc::new(Throttle::new(8 * MIB))),
        cancel: Some(Arc::clone(&cancel)),
        ..CopyOptions::default()
    };
    let flag = Arc::clone(&cancel);
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        flag.store(true, Ordering::SeqCst);
        Instant::now()
    });
    let mut last = (0, 0);
    let err = copy_file(&src, &dst, &opts, &mut |d, t| last = (d, t)).unwrap_err();
    let returned = Instant::now();
    let cancelled_at = setter.join().unwrap();
    assert!(matches!(err, CopyError::Cancelled), "{err}");
    assert_eq!(err.errno(), libc::ECANCELED);
    assert!(
        returned.duration_since(cancelled_at) < Duration::from_secs(1),
        "cancel must take effect within 1 s"
    );
    assert!(
        last.0 > 0 && last.0 < 32 * MIB,
        "stopped part way: {last:?}"
    );
    assert!(dst.exists(), "the copy removes nothing");
    assert_eq!(fs::read(&src).unwrap(), data, "source untouched");
}

#[test]
fn throttle_at_10_mib_per_s_takes_at_least_1_8_s_for_20_mib() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_file(&src, &pattern(20 * MIB as usize, 9));
    let opts = CopyOptions {
        throttle: Some(Arc::new(Throttle::new(10 * MIB))),
        ..CopyOptions::default()
    };
    let mut calls = 0u32;
    let t0 = Instant::now();
    let report = copy_file(&src, &dir.path().join("dst"), &opts, &mut |_, _| calls += 1).unwrap();
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(1800), "took {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(report.mib_per_s() <= 11.0, "{} MiB/s", report.mib_per_s());
    // At least once a second while throttled.
    assert!(calls >= 3, "{calls} progress calls");
}

#[test]
fn throttle_rate_zero_is_unlimited_and_can_change() {
    let t = Throttle::new(0);
    let t0 = Instant::now();
    t.take(1 << 30, None).unwrap();
    assert!(t0.elapsed() < Duration::from_millis(50));
    t.set_rate(1 << 30);
    assert_eq!(t.rate(), 1 << 30);
}

#[test]
fn hash_file_matches_blake3_and_skips_holes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    let f = File::create(&p).unwrap();
    f.set_len(9 * MIB + 17).unwrap();
    f.write_all_at(b"hello", 3 * MIB).unwrap();
    drop(f);
    let h = copy::hash_file(&p, None).unwrap();
    assert_eq!(h, blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string());
}

/// A loop-mounted xfs image (reflink), unmounted and detached on drop.
struct XfsMount {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
    loopdev: String,
}

impl XfsMount {
    fn new() -> Result<XfsMount, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let img = dir.path().join("xfs.img");
        File::create(&img)
            .and_then(|f| f.set_len(512 * MIB))
            .map_err(|e| e.to_string())?;
        let run = |cmd: &mut Command| -> Result<String, String> {
            let out = cmd.output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        run(Command::new("mkfs.xfs")
            .args(["-q", "-f", "-m", "reflink=1"])
            .arg(&img))?;
        let loopdev = run(Command::new("losetup").args(["-f", "--show"]).arg(&img))?;
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        if let Err(e) = run(Command::new("mount").arg(&loopdev).arg(&mnt)) {
            let _ = Command::new("losetup").args(["-d", &loopdev]).status();
            return Err(e);
        }
        Ok(XfsMount {
            _dir: dir,
            mnt,
            loopdev,
        })
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = Command::new("losetup").args(["-d", &self.loopdev]).status();
    }
}

#[test]
fn reflink_is_used_on_one_xfs_filesystem() {
    if !is_root() {
        return skip("reflink test needs root to loop-mount xfs");
    }
    let m = match XfsMount::new() {
        Ok(m) => m,
        Err(e) => return skip(&format!("cannot loop-mount xfs: {e}")),
    };
    let t0 = m.mnt.join("t0");
    let t1 = m.mnt.join("t1");
    fs::create_dir(&t0).unwrap();
    fs::create_dir(&t1).unwrap();
    let src = t0.join("f");
    let data = pattern(4 * MIB as usize, 10);
    write_file(&src, &data);
    let dst = t1.join("staging");
    let report = copy_file(&src, &dst, &CopyOptions::default(), &mut no_progress()).unwrap();
    assert_eq!(report.method, CopyMethod::Reflink);
    assert_eq!(report.blake3, blake3::hash(&data).to_hex().to_string());
    assert_eq!(fs::read(&dst).unwrap(), data);
    // Staging files are regular files created O_EXCL; the source is
    // opened O_NOFOLLOW, so a symlink source is refused.
    let link = t0.join("link");
    std::os::unix::fs::symlink(&src, &link).unwrap();
    assert!(
        copy_file(
            &link,
            &t1.join("x"),
            &CopyOptions::default(),
            &mut no_progress()
        )
        .is_err()
    );
}

#[test]
fn a_source_truncated_during_the_copy_fails_cleanly() {
    // The stream copy moves the source's pages with sendfile. A client
    // truncating the file part way must make the copy fail with "source
    // changed" -- never a short staging file taken for a good copy.
    // With the W9 re-hash trailing the copy too: its reader meets the
    // short source as well, and nothing hangs.
    for rehash_source in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        write_file(&src, &pattern(32 * MIB as usize, 12));
        let dst = dir.path().join("staging");
        let opts = CopyOptions {
            allow_reflink: false,
            allow_copy_file_range: false,
            throttle: Some(Arc::new(Throttle::new(16 * MIB))),
            rehash_source,
            ..CopyOptions::default()
        };
        let truncate_at = std::thread::spawn({
            let src = src.clone();
            move || {
                std::thread::sleep(Duration::from_millis(400));
                OpenOptions::new()
                    .write(true)
                    .open(&src)
                    .unwrap()
                    .set_len(MIB)
                    .unwrap();
            }
        });
        let err = copy_file(&src, &dst, &opts, &mut no_progress()).unwrap_err();
        truncate_at.join().unwrap();
        assert!(
            matches!(err, CopyError::SourceChanged(_)),
            "rehash {rehash_source}: expected a source-changed error, got {err}"
        );
    }
}

/// S10.3/4 `smoothfs_verify_readback = direct`: the staging file is read
/// back with O_DIRECT once it is durable, instead of from the page cache
/// while it is written; the hash agrees for a stream copy and for a
/// `copy_file_range` copy of a file with a hole and an end in the middle of
/// a block. (On /var/tmp: tmpfs refuses O_DIRECT.)
#[test]
fn direct_readback_reads_the_staging_file_with_o_direct() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let src = dir.path().join("src");
    let f = File::create(&src).unwrap();
    f.write_all_at(&pattern(3 * MIB as usize + 1234, 7), 0)
        .unwrap();
    f.write_all_at(&pattern(100_000, 8), 9 * MIB).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let expected = blake3::hash(&fs::read(&src).unwrap()).to_hex().to_string();
    let stream = CopyOptions {
        allow_reflink: false,
        allow_copy_file_range: false,
        rehash_source: true,
        chunk_bytes: 1 << 20,
        ..CopyOptions::default()
    };
    for (name, opts) in [
        (
            "stream, direct",
            CopyOptions {
                readback_direct: true,
                ..stream.clone()
            },
        ),
        (
            "copy_file_range, direct",
            CopyOptions {
                allow_reflink: false,
                readback_direct: true,
                ..CopyOptions::default()
            },
        ),
        ("stream, cache", stream.clone()),
    ] {
        let dst = dir
            .path()
            .join(format!("staging-{}", name.replace([',', ' '], "-")));
        let report = copy_file(&src, &dst, &opts, &mut no_progress()).unwrap();
        assert_eq!(report.blake3, expected, "{name}: source hash");
        assert_eq!(
            report.staging_blake3.as_deref(),
            Some(expected.as_str()),
            "{name}: staging read back"
        );
        assert_eq!(report.readback_direct, opts.readback_direct, "{name}");
        assert_eq!(fs::read(&dst).unwrap(), fs::read(&src).unwrap(), "{name}");
    }
}
