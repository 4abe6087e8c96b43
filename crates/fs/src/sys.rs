//! Every `unsafe` system-call wrapper of the data plane, in one place.
//!
//! Each wrapper is fd-relative (`*at`) and returns `io::Result`, where the
//! errno *is* the error. Callers never build absolute lower paths. The xattr
//! calls use the `*xattrat` system calls (Linux 6.13); on an older kernel
//! they fall back to `/proc/self/fd/<dirfd>/<name>`, where `<dirfd>` was
//! itself opened confined to a tier root and `name` is a single component.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_ssize(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

/// `openat2(dirfd, path, flags, mode)` with RESOLVE_BENEATH |
/// RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS: the result is always inside
/// `dirfd` and no symlink (planted in a tier or not) is followed on the way.
pub fn openat_beneath(
    dirfd: BorrowedFd<'_>,
    path: &OsStr,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let path = if path.is_empty() {
        OsStr::new(".")
    } else {
        path
    };
    let c = cstr(path)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
            mode as u64
        } else {
            0
        },
        resolve: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS,
    };
    loop {
        // SAFETY: `c` is a valid C string, `how` a valid open_how of the size passed.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if ret >= 0 {
            // SAFETY: the kernel returned a new descriptor we now own.
            return Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) });
        }
        let e = io::Error::last_os_error();
        // EAGAIN: a concurrent rename raced the resolution; retry.
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
}

/// `openat(dirfd, name, flags | O_NOFOLLOW)` for a single component.
pub fn openat_name(
    dirfd: BorrowedFd<'_>,
    name: &OsStr,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: valid C string; the returned fd is owned.
    let fd = check(unsafe {
        libc::openat(
            dirfd.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn fstatat(dirfd: BorrowedFd<'_>, name: &OsStr) -> io::Result<libc::stat> {
    let c = cstr(if name.is_empty() {
        OsStr::new("")
    } else {
        name
    })?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    // SAFETY: st points to writable memory of the right size.
    check(unsafe { libc::fstatat(dirfd.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), flags) })?;
    Ok(unsafe { st.assume_init() })
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    fstatat(fd, OsStr::new(""))
}

pub fn mkdirat(dirfd: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::mkdirat(dirfd.as_raw_fd(), c.as_ptr(), mode) }).map(drop)
}

pub fn mknodat(dirfd: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::mknodat(dirfd.as_raw_fd(), c.as_ptr(), mode, rdev) }).map(drop)
}

pub fn symlinkat(target: &OsStr, dirfd: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    check(unsafe { libc::symlinkat(t.as_ptr(), dirfd.as_raw_fd(), c.as_ptr()) }).map(drop)
}

pub fn readlinkat(dirfd: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<u8>> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    let n = check_ssize(unsafe {
        libc::readlinkat(
            dirfd.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

pub fn unlinkat(dirfd: BorrowedFd<'_>, name: &OsStr, dir: bool) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
    check(unsafe { libc::unlinkat(dirfd.as_raw_fd(), c.as_ptr(), flags) }).map(drop)
}

pub fn renameat2(
    olddir: BorrowedFd<'_>,
    oldname: &OsStr,
    newdir: BorrowedFd<'_>,
    newname: &OsStr,
    flags: u32,
) -> io::Result<()> {
    let o = cstr(oldname)?;
    let n = cstr(newname)?;
    check(unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            o.as_ptr(),
            newdir.as_raw_fd(),
            n.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

pub fn linkat(
    olddir: BorrowedFd<'_>,
    oldname: &OsStr,
    newdir: BorrowedFd<'_>,
    newname: &OsStr,
) -> io::Result<()> {
    let o = cstr(oldname)?;
    let n = cstr(newname)?;
    check(unsafe {
        libc::linkat(
            olddir.as_raw_fd(),
            o.as_ptr(),
            newdir.as_raw_fd(),
            n.as_ptr(),
            0,
        )
    })
    .map(drop)
}

pub fn fchownat(dirfd: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    check(unsafe { libc::fchownat(dirfd.as_raw_fd(), c.as_ptr(), uid, gid, flags) }).map(drop)
}

/// Clear the set-user-ID bit, and the set-group-ID bit when group execute
/// is set, of the regular file open as `fd` -- what the kernel does when
/// a caller without CAP_FSETID writes, truncates or chowns a file. Returns
/// the new mode when it changed.
pub fn kill_suidgid(fd: BorrowedFd<'_>) -> io::Result<Option<u32>> {
    let st = fstat(fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(None);
    }
    let mut mode = st.st_mode & 0o7777;
    mode &= !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        mode &= !libc::S_ISGID;
    }
    if mode == st.st_mode & 0o7777 {
        return Ok(None);
    }
    // SAFETY: a live descriptor and a plain mode.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })?;
    Ok(Some((st.st_mode & libc::S_IFMT) | mode))
}

pub fn fchmodat(dirfd: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // fchmodat cannot take AT_SYMLINK_NOFOLLOW on most kernels; the caller
    // never passes a symlink (chmod on a symlink through FUSE targets the link's target inode).
    check(unsafe { libc::fchmodat(dirfd.as_raw_fd(), c.as_ptr(), mode, 0) }).map(drop)
}

pub fn utimensat(
    dirfd: BorrowedFd<'_>,
    name: &OsStr,
    times: &[libc::timespec; 2],
) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = libc::AT_SYMLINK_NOFOLLOW;
    check(unsafe { libc::utimensat(dirfd.as_raw_fd(), c.as_ptr(), times.as_ptr(), flags) })
        .map(drop)
}

pub fn futimens(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> io::Result<()> {
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) }).map(drop)
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> io::Result<usize> {
    check_ssize(unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            off as libc::off_t,
        )
    })
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: u64) -> io::Result<usize> {
    check_ssize(unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            off as libc::off_t,
        )
    })
}

pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
    .map(drop)
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, off: u64, len: u64) -> io::Result<()> {
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) })
        .map(drop)
}

/// `ioctl(fd, cmd, arg)` for a command whose argument is a buffer the
/// kernel reads or fills; the caller sizes `arg` for `cmd`.
pub fn ioctl_arg(fd: BorrowedFd<'_>, cmd: u32, arg: &mut [u8]) -> io::Result<()> {
    // SAFETY: `arg` is a live, writable buffer at least as long as the
    // argument of `cmd` (the caller's contract).
    check(unsafe { libc::ioctl(fd.as_raw_fd(), cmd as libc::Ioctl, arg.as_mut_ptr()) }).map(drop)
}

pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: i32) -> io::Result<i64> {
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: u64,
) -> io::Result<usize> {
    let mut oi = off_in as libc::loff_t;
    let mut oo = off_out as libc::loff_t;
    check_ssize(unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut oi,
            fd_out.as_raw_fd(),
            &mut oo,
            len as usize,
            0,
        )
    })
}

pub fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    Ok(unsafe { st.assume_init() })
}

/// `flock(2)` on a lower descriptor (BSD locks are forwarded to the lower file).
pub fn flock(fd: BorrowedFd<'_>, op: i32) -> io::Result<()> {
    check(unsafe { libc::flock(fd.as_raw_fd(), op) }).map(drop)
}

/// Path naming `name` inside the confined directory `dirfd`, for the xattr
/// calls on a kernel without the `*xattrat` system calls. `/proc/self/fd/N`
/// is a magic link to the already-confined directory; `name` is one
/// component and the `l*` calls never follow it.
fn proc_path(dirfd: BorrowedFd<'_>, name: &OsStr) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}", dirfd.as_raw_fd()).into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name.as_bytes());
    }
    CString::new(p).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

// The `*xattrat` system calls (Linux 6.13; one number on every
// architecture). They name `name` relative to `dirfd` like every other call
// here: one component looked up, no walk through procfs.
const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

/// `struct xattr_args` of the `*xattrat` calls (XATTR_ARGS_SIZE_VER0).
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// Whether the running kernel has the `*xattrat` calls: unknown until the
/// first call, then yes or no for the life of the process.
static XATTRAT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(XATTRAT_UNKNOWN);
const XATTRAT_UNKNOWN: u8 = 0;
const XATTRAT_YES: u8 = 1;
const XATTRAT_NO: u8 = 2;

/// Run `at` (an `*xattrat` call on `name`) unless the kernel is known to
/// lack it; `None` means "use the /proc path instead". The first ENOSYS
/// settles it. Kernels 6.13 to 6.15 refuse AT_EMPTY_PATH on an O_PATH
/// descriptor (every directory descriptor here) with EBADF: such a call
/// takes the /proc path too.
fn with_xattrat<T>(name: &OsStr, at: impl FnOnce() -> io::Result<T>) -> Option<io::Result<T>> {
    use std::sync::atomic::Ordering;
    if XATTRAT.load(Ordering::Relaxed) == XATTRAT_NO {
        return None;
    }
    match at() {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            XATTRAT.store(XATTRAT_NO, Ordering::Relaxed);
            None
        }
        Err(e) if name.is_empty() && e.raw_os_error() == Some(libc::EBADF) => None,
        r => {
            XATTRAT.store(XATTRAT_YES, Ordering::Relaxed);
            Some(r)
        }
    }
}

/// The path argument and `at_flags` for `name` in `dirfd`: the entry itself,
/// never followed, or with an empty `name` the directory `dirfd` names.
fn at_name(name: &OsStr) -> io::Result<(CString, libc::c_uint)> {
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    Ok((cstr(name)?, flags as libc::c_uint))
}

/// `getxattrat` or `setxattrat` (`sysno`) of `attr` on `n` in `dirfd`,
/// with `args` describing the value buffer.
///
/// # Safety
/// `args.value` must point to a buffer of `args.size` bytes, writable for
/// `getxattrat`.
unsafe fn xattrat_value(
    sysno: libc::c_long,
    dirfd: BorrowedFd<'_>,
    n: &CStr,
    at_flags: libc::c_uint,
    attr: &CStr,
    mut args: XattrArgs,
) -> io::Result<usize> {
    // SAFETY: live descriptor, NUL-terminated strings, and `args` as the
    // caller promises.
    check_ssize(unsafe {
        libc::syscall(
            sysno,
            dirfd.as_raw_fd(),
            n.as_ptr(),
            at_flags,
            attr.as_ptr(),
            &mut args as *mut XattrArgs,
            std::mem::size_of::<XattrArgs>(),
        )
    } as libc::ssize_t)
}

/// One `getxattr` of `attr` on `name` in `dirfd` into `buf` (0 length asks
/// for the size).
fn getxattr_once(
    dirfd: BorrowedFd<'_>,
    name: &OsStr,
    attr: &CStr,
    buf: &mut [u8],
) -> io::Result<usize> {
    let (n, at_flags) = at_name(name)?;
    if let Some(r) = with_xattrat(name, || {
        let args = XattrArgs {
            value: buf.as_mut_ptr() as u64,
            size: buf.len().min(u32::MAX as usize) as u32,
            flags: 0,
        };
        // SAFETY: `args` describes `buf`, writable for `args.size` bytes.
        unsafe { xattrat_value(SYS_GETXATTRAT, dirfd, &n, at_flags, attr, args) }
    }) {
        return r;
    }
    let p = proc_path(dirfd, name)?;
    let (ptr, len) = (buf.as_mut_ptr().cast(), buf.len());
    // SAFETY: NUL-terminated strings and a buffer writable for `len` bytes.
    check_ssize(unsafe {
        if name.is_empty() {
            libc::getxattr(p.as_ptr(), attr.as_ptr(), ptr, len)
        } else {
            libc::lgetxattr(p.as_ptr(), attr.as_ptr(), ptr, len)
        }
    })
}

/// Read an xattr of `name` in `dirfd` (or of `dirfd` itself when `name` is
/// empty). Grows the buffer as needed.
pub fn lgetxattr(dirfd: BorrowedFd<'_>, name: &OsStr, attr: &CStr) -> io::Result<Vec<u8>> {
    let mut cap = 256usize;
    loop {
        let mut buf = vec![0u8; cap];
        match getxattr_once(dirfd, name, attr, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && cap < (1 << 20) => cap *= 16,
            Err(e) => return Err(e),
        }
    }
}

pub fn lgetxattr_size(dirfd: BorrowedFd<'_>, name: &OsStr, attr: &CStr) -> io::Result<usize> {
    getxattr_once(dirfd, name, attr, &mut [])
}

/// Set an xattr on the open file `fd` (no path walk).
pub fn fsetxattr(fd: BorrowedFd<'_>, attr: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    // SAFETY: a live descriptor, a NUL-terminated name and a buffer of
    // `value.len()` bytes.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            attr.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

pub fn lsetxattr(
    dirfd: BorrowedFd<'_>,
    name: &OsStr,
    attr: &CStr,
    value: &[u8],
    flags: i32,
) -> io::Result<()> {
    let (n, at_flags) = at_name(name)?;
    if let Some(r) = with_xattrat(name, || {
        let args = XattrArgs {
            value: value.as_ptr() as u64,
            size: u32::try_from(value.len())
                .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
            flags: flags as u32,
        };
        // SAFETY: `args` describes `value`, readable for `args.size` bytes.
        unsafe { xattrat_value(SYS_SETXATTRAT, dirfd, &n, at_flags, attr, args) }.map(drop)
    }) {
        return r;
    }
    let p = proc_path(dirfd, name)?;
    // SAFETY: NUL-terminated strings and a buffer of `value.len()` bytes.
    check(unsafe {
        if name.is_empty() {
            libc::setxattr(
                p.as_ptr(),
                attr.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        } else {
            libc::lsetxattr(
                p.as_ptr(),
                attr.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        }
    })
    .map(drop)
}

pub fn lremovexattr(dirfd: BorrowedFd<'_>, name: &OsStr, attr: &CStr) -> io::Result<()> {
    let (n, at_flags) = at_name(name)?;
    if let Some(r) = with_xattrat(name, || {
        // SAFETY: live descriptor and NUL-terminated strings.
        check_ssize(unsafe {
            libc::syscall(
                SYS_REMOVEXATTRAT,
                dirfd.as_raw_fd(),
                n.as_ptr(),
                at_flags,
                attr.as_ptr(),
            )
        } as libc::ssize_t)
        .map(drop)
    }) {
        return r;
    }
    let p = proc_path(dirfd, name)?;
    // SAFETY: NUL-terminated strings.
    check(unsafe {
        if name.is_empty() {
            libc::removexattr(p.as_ptr(), attr.as_ptr())
        } else {
            libc::lremovexattr(p.as_ptr(), attr.as_ptr())
        }
    })
    .map(drop)
}

/// One `listxattr` of `name` in `dirfd` into `buf`.
fn listxattr_once(dirfd: BorrowedFd<'_>, name: &OsStr, buf: &mut [u8]) -> io::Result<usize> {
    let (n, at_flags) = at_name(name)?;
    if let Some(r) = with_xattrat(name, || {
        // SAFETY: live descriptor, NUL-terminated path and a buffer
        // writable for `buf.len()` bytes.
        check_ssize(unsafe {
            libc::syscall(
                SYS_LISTXATTRAT,
                dirfd.as_raw_fd(),
                n.as_ptr(),
                at_flags,
                buf.as_mut_ptr(),
                buf.len(),
            )
        } as libc::ssize_t)
    }) {
        return r;
    }
    let p = proc_path(dirfd, name)?;
    // SAFETY: NUL-terminated path and a buffer writable for `buf.len()` bytes.
    check_ssize(unsafe {
        if name.is_empty() {
            libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        } else {
            libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        }
    })
}

/// The raw NUL-separated xattr name list.
pub fn llistxattr(dirfd: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<u8>> {
    let mut cap = 1024usize;
    loop {
        let mut buf = vec![0u8; cap];
        match listxattr_once(dirfd, name, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && cap < (1 << 22) => cap *= 16,
            Err(e) => return Err(e),
        }
    }
}

/// A directory entry read from a lower directory.
pub struct RawDirent {
    pub name: Vec<u8>,
    pub ino: u64,
    pub d_type: u8,
}

/// All entries of the directory `fd` except `.` and `..`.
pub fn read_dir_all(fd: BorrowedFd<'_>) -> io::Result<Vec<RawDirent>> {
    // Duplicate with a fresh open so the caller's fd offset is untouched.
    let dup = openat_beneath(fd, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dup.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            break;
        }
        let n = n as usize;
        let mut off = 0usize;
        while off + 19 <= n {
            let ino = u64::from_ne_bytes(buf[off..off + 8].try_into().unwrap_or([0; 8]));
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let d_type = buf[off + 18];
            if reclen == 0 || off + reclen > n {
                break;
            }
            let name_bytes = &buf[off + 19..off + reclen];
            let len = name_bytes
                .iter()
                .position(|b| *b == 0)
                .unwrap_or(name_bytes.len());
            let name = name_bytes[..len].to_vec();
            if name != b"." && name != b".." {
                out.push(RawDirent { name, ino, d_type });
            }
            off += reclen;
        }
    }
    Ok(out)
}

pub fn ioctl_ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> io::Result<()> {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    check(unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) }).map(drop)
}

/// Runs `f` with this thread's filesystem uid/gid and supplementary groups
/// set to the given credentials, then restores root's. Used to reopen a
/// lower file as the original opener (S11.5 item 2): the lower filesystem
/// then checks permission and ACLs exactly as for that user.
///
/// `setfsuid`, `setfsgid` and the raw `setgroups` syscall are per-thread on
/// Linux (glibc's `setgroups` wrapper would change every thread), so no
/// other request thread sees the switch.
pub fn with_creds<T>(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce() -> T) -> io::Result<T> {
    // SAFETY: plain syscalls on this thread's credentials; the pointer and
    // length describe a live slice.
    unsafe {
        let mut saved: Vec<libc::gid_t> = vec![0; 256];
        let n = libc::syscall(
            libc::SYS_getgroups,
            saved.len() as libc::c_long,
            saved.as_mut_ptr(),
        );
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        saved.truncate(n as usize);
        if libc::syscall(
            libc::SYS_setgroups,
            groups.len() as libc::c_long,
            groups.as_ptr(),
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        let old_gid = libc::syscall(libc::SYS_setfsgid, gid as libc::c_long);
        let old_uid = libc::syscall(libc::SYS_setfsuid, uid as libc::c_long);
        let out = f();
        libc::syscall(libc::SYS_setfsuid, old_uid);
        libc::syscall(libc::SYS_setfsgid, old_gid);
        libc::syscall(
            libc::SYS_setgroups,
            saved.len() as libc::c_long,
            saved.as_ptr(),
        );
        Ok(out)
    }
}

/// Supplementary groups of process `pid` (from /proc), for S11.5 item 1.
pub fn proc_groups(pid: u32) -> Vec<u32> {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    s.lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The command name of process `pid` (`/proc/<pid>/comm`), for `mediated_comm`.
pub fn proc_comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::atomic::Ordering;

    /// Every xattr wrapper on an entry, on a symlink (never followed) and on
    /// the directory descriptor itself (empty name), with the `*xattrat`
    /// calls and, forced, with the /proc fallback: the same answers.
    fn exercise(dir: &std::path::Path) {
        let top = std::fs::File::open(dir).unwrap();
        let root = openat_beneath(
            top.as_fd(),
            OsStr::new("."),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .unwrap();
        let d = root.as_fd();
        std::fs::write(dir.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", dir.join("l")).unwrap();
        let a = c"user.smoothfs-test";
        for name in ["f", ""] {
            let n = OsStr::new(name);
            assert_eq!(
                lgetxattr(d, n, a).unwrap_err().raw_os_error(),
                Some(libc::ENODATA)
            );
            lsetxattr(d, n, a, b"v1", libc::XATTR_CREATE).unwrap();
            assert_eq!(
                lsetxattr(d, n, a, b"v2", libc::XATTR_CREATE)
                    .unwrap_err()
                    .raw_os_error(),
                Some(libc::EEXIST)
            );
            lsetxattr(d, n, a, &[7u8; 3000], 0).unwrap();
            assert_eq!(lgetxattr(d, n, a).unwrap(), vec![7u8; 3000]);
            assert_eq!(lgetxattr_size(d, n, a).unwrap(), 3000);
            let list = llistxattr(d, n).unwrap();
            assert!(list.split(|b| *b == 0).any(|x| x == a.to_bytes()));
            lremovexattr(d, n, a).unwrap();
            assert_eq!(
                lremovexattr(d, n, a).unwrap_err().raw_os_error(),
                Some(libc::ENODATA)
            );
        }
        // The symlink itself: user xattrs are refused on symlinks (EPERM),
        // which shows it was not followed to "f".
        assert_eq!(
            lsetxattr(d, OsStr::new("l"), a, b"v", 0)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EPERM)
        );
        assert_eq!(
            lgetxattr(d, OsStr::new("absent"), a)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOENT)
        );
    }

    #[test]
    fn xattr_wrappers_agree_with_and_without_xattrat() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("at")).unwrap();
        std::fs::create_dir(t.path().join("proc")).unwrap();
        exercise(&t.path().join("at"));
        // On 6.13 and later the calls above were the *xattrat ones.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::uname(&mut u) }, 0);
        let release = unsafe { CStr::from_ptr(u.release.as_ptr()) }.to_string_lossy();
        let mut v = release.split(|c: char| !c.is_ascii_digit());
        let major: u32 = v.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let minor: u32 = v.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        if (major, minor) >= (6, 13) {
            assert_eq!(XATTRAT.load(Ordering::Relaxed), XATTRAT_YES, "{release}");
        }
        XATTRAT.store(XATTRAT_NO, Ordering::Relaxed);
        exercise(&t.path().join("proc"));
        XATTRAT.store(XATTRAT_UNKNOWN, Ordering::Relaxed);
    }
}
