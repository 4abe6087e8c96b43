//! S2: the union namespace — lookup (S2.1), union readdir (S2.3), unlink
//! and rmdir (S2.4), rename (S2.5) and POSIX ACLs (S2.7).

mod common;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirEntryExt, MetadataExt, PermissionsExt, chown, symlink};
use std::path::Path;

use common::*;

const MIB: usize = 1 << 20;

/// Every name in a directory through the mount, with how often it was
/// listed and the d_ino it was listed with.
fn listing(dir: &Path) -> HashMap<String, (usize, u64)> {
    let mut names: HashMap<String, (usize, u64)> = HashMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let slot = names.entry(name).or_insert((0, entry.ino()));
        slot.0 += 1;
    }
    names
}

fn assert_listed_once(names: &HashMap<String, (usize, u64)>, name: &str) {
    match names.get(name) {
        Some((1, _)) => {}
        Some((n, _)) => panic!("{name} listed {n} times"),
        None => panic!("{name} not listed; listing: {:?}", names.keys()),
    }
}

#[test]
fn file_made_directly_on_tier1_is_visible_and_readable() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::with_lowers("ext4", "ext4", "", |_, t1| {
        fs::write(t1.join("x"), b"made on tier 1").unwrap();
    });
    assert_listed_once(&listing(p.pool.path()), "x");
    assert_eq!(fs::read(p.mnt("x")).unwrap(), b"made on tier 1");
    // Identity is minted on first lookup and stored on the lower.
    assert_eq!(lower_oid(&p.t1.join("x")).len(), 16);
}

#[test]
fn name_on_both_tiers_shows_the_tier0_copy() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::with_lowers("ext4", "ext4", "", |t0, t1| {
        fs::create_dir(t0.join("d")).unwrap();
        fs::set_permissions(t0.join("d"), fs::Permissions::from_mode(0o710)).unwrap();
        chown(t0.join("d"), Some(1000), Some(1001)).unwrap();
        fs::create_dir(t1.join("d")).unwrap();
        fs::set_permissions(t1.join("d"), fs::Permissions::from_mode(0o755)).unwrap();
        chown(t1.join("d"), Some(2000), Some(2001)).unwrap();
        fs::write(t0.join("a"), b"tier zero").unwrap();
        fs::write(t1.join("a"), b"tier one, longer").unwrap();
    });
    let d = fs::metadata(p.mnt("d")).unwrap();
    assert!(d.is_dir());
    assert_eq!(d.mode() & 0o7777, 0o710, "directory mode comes from tier 0");
    assert_eq!(
        (d.uid(), d.gid()),
        (1000, 1001),
        "directory owner comes from tier 0"
    );
    assert_eq!(fs::read(p.mnt("a")).unwrap(), b"tier zero");
    assert_eq!(fs::metadata(p.mnt("a")).unwrap().len(), 9);
}

#[test]
fn smoothfs_dir_is_hidden_and_reserved_at_the_root() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    // The daemon made <tier>/.smoothfs on mount (S1.2).
    assert!(p.t0.join(".smoothfs").is_dir());
    let names = listing(p.pool.path());
    assert!(!names.contains_key(".smoothfs"), "listing shows .smoothfs");
    assert_errno(
        fs::metadata(p.mnt(".smoothfs")),
        libc::ENOENT,
        "stat .smoothfs",
    );
    assert_errno(
        fs::create_dir(p.mnt(".smoothfs")),
        libc::EPERM,
        "mkdir .smoothfs",
    );
    assert_errno(
        fs::write(p.mnt(".smoothfs"), b""),
        libc::EPERM,
        "create .smoothfs",
    );
    fs::write(p.mnt("f"), b"x").unwrap();
    assert_errno(
        fs::rename(p.mnt("f"), p.mnt(".smoothfs")),
        libc::EPERM,
        "rename onto .smoothfs",
    );
    // Only the root is special.
    fs::create_dir(p.mnt("sub")).unwrap();
    fs::create_dir(p.mnt("sub/.smoothfs")).unwrap();
}

#[test]
fn union_readdir_lists_spilled_and_shared_names_once() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::with_lowers("ext4", "ext4", "", |t0, t1| {
        for t in [t0, t1] {
            fs::create_dir(t.join("both-dir")).unwrap();
            fs::write(t.join("both-file"), b"same name").unwrap();
        }
        fs::write(t0.join("only0"), b"0").unwrap();
        fs::write(t1.join("only1"), b"1").unwrap();
    });
    p.fill_tier0();
    fs::write(p.mnt("spilled"), pattern(MIB, 9)).unwrap();
    assert_eq!(p.holders("spilled"), vec![1]);

    let names = listing(p.pool.path());
    for name in ["spilled", "both-dir", "both-file", "only0", "only1"] {
        assert_listed_once(&names, name);
    }
    assert!(!names.contains_key(".smoothfs"));
    for (name, (count, _)) in &names {
        assert_eq!(*count, 1, "{name} listed {count} times");
    }
}

#[test]
fn readdir_d_ino_equals_st_ino_for_every_entry() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::with_lowers("ext4", "ext4", "", |t0, t1| {
        // Entries without an OID yet: identity is minted while listing.
        fs::create_dir(t0.join("dir0")).unwrap();
        fs::create_dir(t1.join("dir1")).unwrap();
        fs::create_dir(t0.join("shared")).unwrap();
        fs::create_dir(t1.join("shared")).unwrap();
        fs::write(t0.join("shared/a"), b"a").unwrap();
        fs::write(t1.join("shared/b"), b"b").unwrap();
        fs::write(t0.join("f0"), b"0").unwrap();
        fs::write(t1.join("f1"), b"1").unwrap();
        symlink("f0", t1.join("link1")).unwrap();
    });
    fs::write(p.mnt("made-through-mount"), b"m").unwrap();
    for dir in [p.pool.path().to_path_buf(), p.mnt("shared")] {
        let mut count = 0;
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let st = fs::symlink_metadata(entry.path()).unwrap();
            assert_eq!(
                entry.ino(),
                st.ino(),
                "d_ino vs st_ino of {}",
                entry.path().display()
            );
            assert_eq!(
                entry.file_type().unwrap(),
                st.file_type(),
                "d_type of {:?}",
                entry.path()
            );
            assert_eq!(st.ino() >> 63, 1, "st_ino has bit 63 set");
            count += 1;
        }
        assert!(count >= 2, "{} listed only {count} entries", dir.display());
    }
    assert_eq!(ino_of(p.pool.path()), 1, "the root has inode number 1");
}

#[test]
fn unlink_removes_a_spilled_file_from_tier1() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    p.fill_tier0();
    fs::write(p.mnt("spilled"), pattern(MIB, 10)).unwrap();
    assert_eq!(p.holders("spilled"), vec![1]);
    fs::remove_file(p.mnt("spilled")).unwrap();
    assert_eq!(
        p.holders("spilled"),
        Vec::<usize>::new(),
        "a copy remains on a tier"
    );
    assert_errno(
        fs::metadata(p.mnt("spilled")),
        libc::ENOENT,
        "stat after unlink",
    );
}

#[test]
fn rmdir_removes_the_directory_from_every_tier() {
    if !require_root_and_fuse() {
        return;
    }
    let mut p = TwoTierPool::with_lowers("ext4", "ext4", "", |t0, t1| {
        fs::create_dir(t0.join("d")).unwrap();
        fs::create_dir(t1.join("d")).unwrap();
    });
    fs::remove_dir(p.mnt("d")).unwrap();
    assert_eq!(p.holders("d"), Vec::<usize>::new());
    assert_errno(fs::metadata(p.mnt("d")), libc::ENOENT, "stat after rmdir");
    p.pool.remount();
    assert_errno(
        fs::metadata(p.mnt("d")),
        libc::ENOENT,
        "stat after rmdir and remount",
    );
}

#[test]
fn rmdir_fails_enotempty_when_a_tier_copy_holds_a_file() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::with_lowers("ext4", "ext4", "", |t0, t1| {
        fs::create_dir(t0.join("d")).unwrap();
        fs::create_dir(t1.join("d")).unwrap();
        fs::write(t1.join("d/f"), b"keeps d alive").unwrap();
    });
    assert_errno(
        fs::remove_dir(p.mnt("d")),
        libc::ENOTEMPTY,
        "rmdir of non-empty union",
    );
    assert_eq!(p.holders("d"), vec![0, 1], "both copies must remain");
    assert_eq!(fs::read(p.mnt("d/f")).unwrap(), b"keeps d alive");
}

#[test]
fn rename_within_a_tier_keeps_the_inode_number() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    fs::write(p.mnt("a"), b"content").unwrap();
    let ino = ino_of(&p.mnt("a"));
    fs::rename(p.mnt("a"), p.mnt("b")).unwrap();
    assert_errno(fs::metadata(p.mnt("a")), libc::ENOENT, "stat old name");
    assert_eq!(ino_of(&p.mnt("b")), ino);
    assert_eq!(p.holders("b"), vec![0]);
}

#[test]
fn rename_of_spilled_file_into_tier0_only_dir_stays_on_tier1() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    fs::create_dir(p.mnt("dir0")).unwrap();
    fs::create_dir(p.mnt("dir0/sub")).unwrap();
    assert_eq!(p.holders("dir0/sub"), vec![0]);
    p.fill_tier0();
    let data = pattern(3 * MIB, 11);
    fs::write(p.mnt("s.bin"), &data).unwrap();
    assert_eq!(p.holders("s.bin"), vec![1]);
    let ino = ino_of(&p.mnt("s.bin"));

    fs::rename(p.mnt("s.bin"), p.mnt("dir0/sub/s.bin")).unwrap();
    assert_errno(
        fs::metadata(p.mnt("s.bin")),
        libc::ENOENT,
        "old name after rename",
    );
    assert_eq!(
        p.holders("dir0/sub/s.bin"),
        vec![1],
        "no data copied: stays on tier 1"
    );
    assert!(
        p.t1.join("dir0/sub").is_dir(),
        "parent chain materialised on tier 1"
    );
    assert_eq!(ino_of(&p.mnt("dir0/sub/s.bin")), ino);
    assert_eq!(sha256_file(&p.mnt("dir0/sub/s.bin")), sha256_bytes(&data));
}

#[test]
fn rename_of_tier1_file_over_tier0_file_replaces_it() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    fs::write(p.mnt("t"), b"old target on tier 0").unwrap();
    assert_eq!(p.holders("t"), vec![0]);
    p.fill_tier0();
    let data = pattern(MIB, 12);
    fs::write(p.mnt("s"), &data).unwrap();
    assert_eq!(p.holders("s"), vec![1]);
    let ino = ino_of(&p.mnt("s"));

    fs::rename(p.mnt("s"), p.mnt("t")).unwrap();
    assert_eq!(fs::read(p.mnt("t")).unwrap(), data, "t has s's content");
    assert_eq!(ino_of(&p.mnt("t")), ino, "t has s's inode number");
    assert_errno(fs::metadata(p.mnt("s")), libc::ENOENT, "s after rename");
    assert_eq!(p.holders("t"), vec![1], "the old t is on no tier");
    assert_eq!(p.holders("s"), Vec::<usize>::new());
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (a, b) = (cstr(from), cstr(to));
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn rename_exchange_across_tiers_fails_exdev() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    fs::write(p.mnt("on0"), b"tier 0 content").unwrap();
    p.fill_tier0();
    fs::write(p.mnt("on1"), b"tier 1 content").unwrap();
    assert_eq!(p.holders("on0"), vec![0]);
    assert_eq!(p.holders("on1"), vec![1]);
    assert_errno(
        renameat2(&p.mnt("on0"), &p.mnt("on1"), libc::RENAME_EXCHANGE),
        libc::EXDEV,
        "RENAME_EXCHANGE across tiers",
    );
    assert_eq!(fs::read(p.mnt("on0")).unwrap(), b"tier 0 content");
    assert_eq!(fs::read(p.mnt("on1")).unwrap(), b"tier 1 content");
}

#[test]
fn rename_exchange_and_noreplace_work_within_a_tier() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    fs::write(p.mnt("x"), b"x").unwrap();
    fs::write(p.mnt("y"), b"y").unwrap();
    let (ix, iy) = (ino_of(&p.mnt("x")), ino_of(&p.mnt("y")));
    renameat2(&p.mnt("x"), &p.mnt("y"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(p.mnt("x")).unwrap(), b"y");
    assert_eq!((ino_of(&p.mnt("x")), ino_of(&p.mnt("y"))), (iy, ix));
    assert_errno(
        renameat2(&p.mnt("x"), &p.mnt("y"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
        "RENAME_NOREPLACE onto an existing name",
    );
}

#[test]
fn posix_acl_grants_nobody_read_on_a_0600_file() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let f = p.mnt("secret");
    fs::write(&f, b"for nobody's eyes").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    let as_nobody = || {
        cmd(
            "runuser",
            &["-u", "nobody", "--", "cat", &f.to_string_lossy()],
        )
    };

    let denied = as_nobody();
    assert!(
        !denied.status.success(),
        "nobody read a 0600 root file without an ACL"
    );

    cmd_ok("setfacl", &["-m", "u:nobody:r", &f.to_string_lossy()]);
    let allowed = as_nobody();
    assert!(
        allowed.status.success(),
        "nobody could not read with u:nobody:r: {}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert_eq!(allowed.stdout, b"for nobody's eyes");

    let acl = cmd_ok("getfacl", &["-p", &f.to_string_lossy()]);
    let acl = String::from_utf8_lossy(&acl.stdout);
    assert!(acl.contains("user:nobody:r--"), "getfacl output:\n{acl}");
    assert!(
        get_xattr(&p.lower("secret"), "system.posix_acl_access").is_ok(),
        "the ACL is stored as a lower xattr"
    );
}

/// S2.5 item 6: the target directory exists only on tier 1 and tier 0 is
/// completely full (so the parent chain cannot be made there): the file is
/// moved to tier 1 with the cutover protocol and then renamed; the caller
/// sees an ordinary rename, with identity kept.
#[test]
fn s2_5_item6_rename_relocates_when_the_parent_cannot_be_materialised() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let data = pattern(1 << 20, 31);
    write_synced(&p.mnt("f.bin"), &data);
    let ino = ino_of(&p.mnt("f.bin"));
    fill_to_pct(p.t0.path(), 100);
    // Root may still use the reserved blocks: take them too.
    for n in 0.. {
        let path = p.t0.join(format!("smoothfs-test-reserved-{n}"));
        let Ok(f) = std::fs::File::create(&path) else {
            break;
        };
        use std::os::unix::io::AsRawFd;
        if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 1 << 20) } != 0
            && unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 4096) } != 0
        {
            break;
        }
    }
    wait_statfs_refresh();
    std::fs::create_dir(p.mnt("d2")).expect("mkdir spills to tier 1");
    assert_eq!(p.holders("d2"), vec![1]);
    std::fs::rename(p.mnt("f.bin"), p.mnt("d2/f.bin")).expect("rename succeeds");
    assert_eq!(p.holders("d2/f.bin"), vec![1]);
    assert!(p.holders("f.bin").is_empty());
    assert_eq!(std::fs::read(p.mnt("d2/f.bin")).unwrap(), data);
    assert_eq!(ino_of(&p.mnt("d2/f.bin")), ino, "identity kept");
}

#[test]
fn a_default_acl_decides_the_create_mode_and_its_removal_is_seen_at_once() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let d = p.mnt("shared");
    fs::create_dir(&d).unwrap();
    let create = |name: &str| {
        // umask 022 in the creating process; the daemon sees it per request.
        let path = d.join(name);
        let out = cmd(
            "sh",
            &["-c", &format!("umask 022 && : > '{}'", path.display())],
        );
        assert!(out.status.success(), "{out:?}");
        fs::metadata(&path).unwrap().permissions().mode() & 0o777
    };
    // Without a default ACL the umask applies.
    assert_eq!(create("plain"), 0o644);
    // With one, the ACL decides and the umask is ignored (POSIX.1e).
    cmd_ok(
        "setfacl",
        &["-d", "-m", "u::rw,g::rw,o::rw", &d.to_string_lossy()],
    );
    assert_eq!(create("inherits"), 0o666);
    let acl = cmd_ok("getfacl", &["-p", &d.join("inherits").to_string_lossy()]);
    assert!(
        String::from_utf8_lossy(&acl.stdout).contains("other::rw-"),
        "{acl:?}"
    );
    // Removing it is seen by the very next create (no cached answer).
    cmd_ok("setfacl", &["-k", &d.to_string_lossy()]);
    assert_eq!(create("umasked-again"), 0o644);
}

const FS_IOC_GETFLAGS: libc::Ioctl = 0x8008_6601u32 as libc::Ioctl;
const FS_IOC_SETFLAGS: libc::Ioctl = 0x4008_6602u32 as libc::Ioctl;
const FS_IOC_FSGETXATTR: libc::Ioctl = 0x801c_581fu32 as libc::Ioctl;
const FS_IOC_GETVERSION: libc::Ioctl = 0x8008_7601u32 as libc::Ioctl;
const FS_NODUMP_FL: i32 = 0x40;
const FS_IMMUTABLE_FL: i32 = 0x10;
const FS_XFLAG_NODUMP: u32 = 0x80;

fn inode_flags(path: &Path) -> io::Result<i32> {
    let f = fs::File::open(path)?;
    let mut flags = 0i32;
    // SAFETY: a live fd and a pointer to an int, as FS_IOC_GETFLAGS takes.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            FS_IOC_GETFLAGS,
            &mut flags,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags)
}

fn set_inode_flags(path: &Path, flags: i32) -> io::Result<()> {
    let f = fs::File::open(path)?;
    // SAFETY: as above.
    let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), FS_IOC_SETFLAGS, &flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// S2.7/4: chattr/lsattr through the mount act on the authoritative lower
/// (a directory's canonical copy); an immutable flag set through the mount
/// holds against writes through it; other ioctls (isatty's TCGETS,
/// FS_IOC_GETVERSION) fail with ENOTTY as on a regular file, and none of
/// them puts a line in the daemon's log.
#[test]
fn inode_flag_ioctls_reach_the_lower_and_others_fail_enotty() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    fs::create_dir(p.mnt("d")).unwrap();
    fs::write(p.mnt("d/f"), b"flagged").unwrap();
    let lower = p.t0.join("d/f");
    let before = inode_flags(&lower).unwrap();

    // A file: set through the mount, seen on the lower and through the mount.
    let flags = inode_flags(&p.mnt("d/f")).unwrap();
    assert_eq!(flags, before, "the mount reports the lower's flags");
    set_inode_flags(&p.mnt("d/f"), flags | FS_NODUMP_FL).unwrap();
    assert_eq!(inode_flags(&lower).unwrap() & FS_NODUMP_FL, FS_NODUMP_FL);
    assert_eq!(
        inode_flags(&p.mnt("d/f")).unwrap() & FS_NODUMP_FL,
        FS_NODUMP_FL
    );
    // FS_IOC_FSGETXATTR answers from the lower too (struct fsxattr).
    let mut fsx = [0u8; 28];
    let f = fs::File::open(p.mnt("d/f")).unwrap();
    // SAFETY: a live fd and a 28-byte buffer, the size of struct fsxattr.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            FS_IOC_FSGETXATTR,
            fsx.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "{}", io::Error::last_os_error());
    let xflags = u32::from_ne_bytes(fsx[..4].try_into().unwrap());
    assert_eq!(
        xflags & FS_XFLAG_NODUMP,
        FS_XFLAG_NODUMP,
        "fsx_xflags {xflags:#x}"
    );

    // A directory: the canonical copy (tier 0) gets it.
    let dflags = inode_flags(&p.mnt("d")).unwrap();
    set_inode_flags(&p.mnt("d"), dflags | FS_NODUMP_FL).unwrap();
    assert_eq!(
        inode_flags(&p.t0.join("d")).unwrap() & FS_NODUMP_FL,
        FS_NODUMP_FL
    );

    // The pool root: tier 0's root directory.
    let rflags = inode_flags(p.pool.path()).unwrap();
    assert_eq!(rflags, inode_flags(p.t0.path()).unwrap());
    set_inode_flags(p.pool.path(), rflags | FS_NODUMP_FL).unwrap();
    assert_eq!(
        inode_flags(p.t0.path()).unwrap() & FS_NODUMP_FL,
        FS_NODUMP_FL
    );
    set_inode_flags(p.pool.path(), rflags).unwrap();

    // Immutable through the mount: writes through the mount fail EPERM,
    // the bytes stay; clearing it lets them through again.
    set_inode_flags(&p.mnt("d/f"), flags | FS_IMMUTABLE_FL).unwrap();
    assert_errno(
        fs::OpenOptions::new().append(true).open(p.mnt("d/f")),
        libc::EPERM,
        "open for append of an immutable file",
    );
    assert_eq!(fs::read(p.mnt("d/f")).unwrap(), b"flagged");
    set_inode_flags(&p.mnt("d/f"), flags).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(p.mnt("d/f"))
        .unwrap();
    assert_eq!(
        inode_flags(&lower).unwrap() & (FS_IMMUTABLE_FL | FS_NODUMP_FL),
        0
    );

    // Every other command: ENOTTY, as a regular file answers.
    let f = fs::File::open(p.mnt("d/f")).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: isatty only issues TCGETS on the fd.
    assert_eq!(unsafe { libc::isatty(fd) }, 0);
    assert_eq!(
        io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOTTY)
    );
    let mut version = 0i64;
    // SAFETY: a live fd and a pointer to a long.
    let r = unsafe { libc::ioctl(fd, FS_IOC_GETVERSION, &mut version) };
    assert_eq!(r, -1);
    assert_eq!(
        io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOTTY)
    );
    let log = p.pool.log();
    assert!(!log.contains("Not Implemented"), "{log}");
}
