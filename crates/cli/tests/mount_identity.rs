//! S3: object identity — OIDs (S3.1), inode numbers (S3.2), reserved
//! xattrs (S3.4) — and identity across crashes, remounts and NFS-style
//! file handles.

mod common;

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::Path;

use common::*;

const MIB: usize = 1 << 20;

fn assert_v7_oid(oid: &[u8], what: &str) {
    assert_eq!(oid.len(), 16, "{what}: OID is {} bytes", oid.len());
    assert_eq!(
        oid[6] >> 4,
        7,
        "{what}: byte 6 high nibble (version) in {}",
        hex(oid)
    );
    assert_eq!(
        oid[8] >> 6,
        0b10,
        "{what}: byte 8 top bits (variant) in {}",
        hex(oid)
    );
}

/// Identity of `rel` as seen through the mount and on its lower.
fn identity(p: &TwoTierPool, rel: &str) -> (Vec<u8>, u64) {
    let oid = lower_oid(&p.lower(rel));
    let ino = ino_of(&p.mnt(rel));
    (oid, ino)
}

fn oid_is_version7_and_st_ino_derives_from_it(fs_type: &str) {
    let p = TwoTierPool::new(fs_type, fs_type, "");
    fs::write(p.mnt("f"), b"identity").unwrap();
    // Written before the create is answered, with no sync (S3.1/A2).
    let lower = lower_oid(&p.lower("f"));
    assert_v7_oid(&lower, "lower xattr");
    let through_mount = get_xattr(&p.mnt("f"), "trusted.smoothfs.oid").unwrap();
    assert_eq!(
        through_mount, lower,
        "OID through the mount equals the lower's"
    );
    let ino = ino_of(&p.mnt("f"));
    assert_eq!(ino, ino_from_oid(&lower), "st_ino = xxh64(oid) | 1<<63");
    let generation = get_xattr(&p.lower("f"), "trusted.smoothfs.gen").unwrap();
    assert_eq!(generation, 0u32.to_le_bytes(), "a new OID has generation 0");

    fs::create_dir(p.mnt("d")).unwrap();
    let dir_oid = lower_oid(&p.lower("d"));
    assert_v7_oid(&dir_oid, "directory");
    assert_eq!(ino_of(&p.mnt("d")), ino_from_oid(&dir_oid));
    assert_eq!(ino_of(p.pool.path()), 1, "the root is inode 1");
}

#[test]
fn oid_is_a_version7_uuid_and_st_ino_derives_from_it() {
    if !require_root_and_fuse() {
        return;
    }
    oid_is_version7_and_st_ino_derives_from_it("xfs");
}

#[test]
fn oid_is_a_version7_uuid_and_st_ino_derives_from_it_on_ext4() {
    if !require_root_and_fuse() {
        return;
    }
    oid_is_version7_and_st_ino_derives_from_it("ext4");
}

#[test]
fn identity_survives_rename_remount_and_reversed_tier_order() {
    if !require_root_and_fuse() {
        return;
    }
    let mut p = TwoTierPool::new("xfs", "xfs", "");
    for i in 0..20 {
        fs::write(p.mnt(format!("f{i}")), pattern(64 * 1024, i)).unwrap();
    }
    p.fill_tier0();
    for i in 20..30 {
        fs::write(p.mnt(format!("f{i}")), pattern(64 * 1024, i)).unwrap();
    }
    assert_eq!(p.holders("f25"), vec![1], "f20..f29 spilled to tier 1");

    let before: Vec<(String, Vec<u8>, u64, String)> = (0..30)
        .map(|i| {
            let rel = format!("f{i}");
            let (oid, ino) = identity(&p, &rel);
            let sha = sha256_file(&p.mnt(&rel));
            (rel, oid, ino, sha)
        })
        .collect();

    // Rename keeps identity.
    fs::rename(p.mnt("f3"), p.mnt("renamed3")).unwrap();
    fs::rename(p.mnt("f23"), p.mnt("renamed23")).unwrap();
    let current = |rel: &str| match rel {
        "f3" => "renamed3".to_owned(),
        "f23" => "renamed23".to_owned(),
        other => other.to_owned(),
    };
    let check = |p: &TwoTierPool, when: &str| {
        for (rel, oid, ino, sha) in &before {
            let now = current(rel);
            let (oid2, ino2) = identity(p, &now);
            assert_eq!(&oid2, oid, "{when}: OID of {rel}");
            assert_eq!(ino2, *ino, "{when}: st_ino of {rel}");
            assert_eq!(&sha256_file(&p.mnt(&now)), sha, "{when}: content of {rel}");
        }
    };
    check(&p, "after rename");

    p.pool.remount();
    check(&p, "after remount");

    let (t0, t1) = (p.t0.path().to_path_buf(), p.t1.path().to_path_buf());
    p.pool.remount_with_tiers(&[&t1, &t0]);
    check(&p, "after remount with the tiers reversed");
}

#[test]
fn fsynced_files_survive_kill9_with_the_same_identity() {
    if !require_root_and_fuse() {
        return;
    }
    let mut p = TwoTierPool::new("ext4", "ext4", "");
    fs::create_dir(p.mnt("dir")).unwrap();
    let data0 = pattern(2 * MIB, 21);
    write_synced(&p.mnt("dir/on-tier0"), &data0);
    p.fill_tier0();
    let data1 = pattern(2 * MIB, 22);
    write_synced(&p.mnt("dir/spilled"), &data1);
    assert_eq!(p.holders("dir/spilled"), vec![1]);

    let before: Vec<(&str, Vec<u8>, u64)> = ["dir", "dir/on-tier0", "dir/spilled"]
        .into_iter()
        .map(|rel| {
            let oid = get_xattr(&p.mnt(rel), "trusted.smoothfs.oid").unwrap();
            (rel, oid, ino_of(&p.mnt(rel)))
        })
        .collect();

    p.pool.kill9();
    p.pool.remount();

    for (rel, oid, ino) in &before {
        let oid2 = get_xattr(&p.mnt(rel), "trusted.smoothfs.oid").unwrap();
        assert_eq!(&oid2, oid, "OID of {rel} after kill -9");
        assert_eq!(ino_of(&p.mnt(rel)), *ino, "st_ino of {rel} after kill -9");
    }
    assert_eq!(sha256_file(&p.mnt("dir/on-tier0")), sha256_bytes(&data0));
    assert_eq!(sha256_file(&p.mnt("dir/spilled")), sha256_bytes(&data1));
}

#[test]
fn user_xattrs_round_trip_and_reserved_names_are_hidden() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let f = p.mnt("f");
    fs::write(&f, b"xattrs").unwrap();
    set_xattr(&f, "user.a", b"alpha").unwrap();
    set_xattr(&f, "user.b", b"").unwrap();
    assert_eq!(get_xattr(&f, "user.a").unwrap(), b"alpha");
    assert_eq!(get_xattr(&f, "user.b").unwrap(), b"");
    assert_eq!(
        get_xattr(&p.lower("f"), "user.a").unwrap(),
        b"alpha",
        "stored on the lower"
    );

    let names = list_xattr(&f).unwrap();
    assert!(names.contains(&"user.a".to_owned()), "listxattr: {names:?}");
    assert!(names.contains(&"user.b".to_owned()), "listxattr: {names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("trusted.smoothfs.")),
        "listxattr shows reserved names: {names:?}"
    );

    let oid = get_xattr(&f, "trusted.smoothfs.oid").unwrap();
    for name in [
        "trusted.smoothfs.oid",
        "trusted.smoothfs.gen",
        "trusted.smoothfs.fileid",
    ] {
        assert_errno(
            set_xattr(&f, name, &[0u8; 16]),
            libc::EPERM,
            &format!("set {name}"),
        );
    }
    assert_eq!(
        get_xattr(&f, "trusted.smoothfs.oid").unwrap(),
        oid,
        "OID unchanged"
    );
    assert_eq!(lower_oid(&p.lower("f")), oid, "lower OID unchanged");
}

/// `struct file_handle` with room for MAX_HANDLE_SZ bytes.
#[repr(C)]
struct FileHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; 128],
}

fn name_to_handle(path: &Path) -> io::Result<FileHandle> {
    let mut handle = FileHandle {
        handle_bytes: 128,
        handle_type: 0,
        f_handle: [0; 128],
    };
    let mut mount_id: libc::c_int = 0;
    let c = cstr(path);
    let rc = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            (&mut handle as *mut FileHandle).cast::<libc::file_handle>(),
            &mut mount_id,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(handle)
}

fn open_by_handle(mount: &File, handle: &mut FileHandle) -> io::Result<File> {
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (handle as *mut FileHandle).cast::<libc::file_handle>(),
            libc::O_RDONLY,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn read_all(mut f: File) -> Vec<u8> {
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

#[test]
fn file_handles_open_after_cache_drop_and_remount() {
    if !require_root_and_fuse() {
        return;
    }
    let mut p = TwoTierPool::new("ext4", "ext4", "");
    fs::create_dir(p.mnt("d")).unwrap();
    let data = pattern(100_000, 31);
    write_synced(&p.mnt("d/f"), &data);
    let mut handle = name_to_handle(&p.mnt("d/f")).unwrap();

    {
        let mount_fd = File::open(p.pool.path()).unwrap();
        drop_inode_caches();
        let f = open_by_handle(&mount_fd, &mut handle)
            .unwrap_or_else(|e| panic!("open_by_handle_at after drop_caches: {e}"));
        assert_eq!(read_all(f), data);
    }

    p.pool.remount();
    let mount_fd = File::open(p.pool.path()).unwrap();
    drop_inode_caches();
    let f = open_by_handle(&mount_fd, &mut handle)
        .unwrap_or_else(|e| panic!("open_by_handle_at after remount: {e}"));
    assert_eq!(read_all(f), data);
}
