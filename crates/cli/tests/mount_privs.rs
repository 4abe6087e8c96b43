//! Set-id bits and file capabilities on write, truncate and chown through
//! the mount (FUSE_HANDLE_KILLPRIV_V2: the daemon clears them, the kernel
//! no longer asks for `security.capability` before every write). Checked
//! on the lower copy, with passthrough on (auto) and off.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

const SUID: u32 = 0o4000;
const SGID: u32 = 0o2000;

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A file everyone may write, with the given mode, on tier 0.
fn setid_file(p: &TwoTierPool, name: &str, mode: u32) -> std::path::PathBuf {
    let f = p.mnt(name);
    fs::write(&f, b"0123456789").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
    assert_eq!(mode_of(&p.t0.join(name)), mode, "lower mode before");
    f
}

fn as_nobody(script: &str) {
    let out = cmd("runuser", &["-u", "nobody", "--", "sh", "-c", script]);
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_unprivileged_writes_clear_setid(opts: &str) {
    let p = TwoTierPool::new("ext4", "ext4", opts);
    // Write: set-user-ID goes, and set-group-ID with group execute.
    let f = setid_file(&p, "w", 0o6777);
    as_nobody(&format!("printf more >> '{}'", f.display()));
    assert_eq!(mode_of(&p.t0.join("w")), 0o0777, "{opts}: write");
    assert_eq!(mode_of(&f), 0o0777, "{opts}: write, as the mount shows it");
    assert_eq!(fs::read(&f).unwrap(), b"0123456789more");

    // Set-group-ID without group execute (a locking mark) stays.
    let f = setid_file(&p, "lock", 0o6767);
    as_nobody(&format!("printf x >> '{}'", f.display()));
    assert_eq!(
        mode_of(&p.t0.join("lock")),
        0o2767,
        "{opts}: sgid without g+x"
    );

    // Truncate by path and O_TRUNC.
    let f = setid_file(&p, "t", 0o6777);
    as_nobody(&format!("truncate -s 3 '{}'", f.display()));
    assert_eq!(mode_of(&p.t0.join("t")), 0o0777, "{opts}: truncate");
    assert_eq!(fs::read(&f).unwrap(), b"012");
    let f = setid_file(&p, "o", 0o4777);
    as_nobody(&format!(": > '{}'", f.display()));
    assert_eq!(mode_of(&p.t0.join("o")), 0o0777, "{opts}: O_TRUNC");

    // Root (CAP_FSETID) keeps them.
    let f = setid_file(&p, "root", 0o6777);
    let mut h = fs::OpenOptions::new().append(true).open(&f).unwrap();
    std::io::Write::write_all(&mut h, b"root").unwrap();
    drop(h);
    assert_eq!(mode_of(&p.t0.join("root")), 0o6777, "{opts}: root write");
    assert_eq!(mode_of(&f) & (SUID | SGID), SUID | SGID);
}

#[test]
fn unprivileged_write_and_truncate_clear_setid_bits_passthrough() {
    if !require_root_and_fuse() {
        return;
    }
    check_unprivileged_writes_clear_setid("");
}

#[test]
fn unprivileged_write_and_truncate_clear_setid_bits_mediated() {
    if !require_root_and_fuse() {
        return;
    }
    check_unprivileged_writes_clear_setid("passthrough=off");
}

#[test]
fn unprivileged_chgrp_clears_setgid_and_root_chown_clears_setuid() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let f = setid_file(&p, "c", 0o6755);
    // nobody owns it and changes its group to its own group.
    std::os::unix::fs::chown(&f, Some(65534), None).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o6755)).unwrap();
    as_nobody(&format!("chgrp \"$(id -g)\" '{}'", f.display()));
    assert_eq!(
        mode_of(&p.t0.join("c")) & (SUID | SGID),
        0,
        "chgrp by owner"
    );
    // As on any Linux filesystem, chown by root clears set-user-ID.
    let f = setid_file(&p, "r", 0o4755);
    std::os::unix::fs::chown(&f, Some(1), None).unwrap();
    assert_eq!(mode_of(&p.t0.join("r")) & SUID, 0, "chown by root");
}

#[test]
fn a_write_drops_a_file_capability() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "");
    let f = p.mnt("cap");
    fs::write(&f, b"binary").unwrap();
    // VFS_CAP_REVISION_2 with cap_net_bind_service (bit 10) permitted.
    let cap = "0x0000000200040000000000000000000000000000";
    let lower = p.t0.join("cap");
    cmd_ok(
        "setfattr",
        &[
            "-n",
            "security.capability",
            "-v",
            cap,
            &lower.to_string_lossy(),
        ],
    );
    assert!(get_xattr(&f, "security.capability").is_ok());
    let mut h = fs::OpenOptions::new().append(true).open(&f).unwrap();
    std::io::Write::write_all(&mut h, b"patched").unwrap();
    drop(h);
    let left = get_xattr(&lower, "security.capability");
    assert_eq!(
        left.as_ref().map_err(|e| e.raw_os_error()),
        Err(Some(libc::ENODATA)),
        "a written file keeps no file capability"
    );
}
