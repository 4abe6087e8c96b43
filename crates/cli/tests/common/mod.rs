//! Harness for the mount integration tests: loop-backed tiers, a pool
//! mounted by the real `smoothfs` binary, and the few syscall helpers the
//! tests share.
//!
//! Every resource is owned by a guard whose `Drop` releases it, so a failed
//! assertion (a panic) still unmounts the pool, then the tiers, then detaches
//! the loop devices and removes the images. Drop order in a test is the
//! reverse of declaration order: declare tiers first, then the pool.
//!
//! A pool daemon that hangs would hang the test thread inside a syscall on
//! the mount. A per-pool watchdog therefore SIGKILLs the daemon after
//! `SMOOTHFS_TEST_WATCHDOG_SECS` (default 300): the kernel then aborts the
//! connection, the blocked syscall returns ENOTCONN and the test fails
//! instead of hanging CI.

// Each integration test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// The binary under test, built by cargo for this test run.
pub const SMOOTHFS: &str = env!("CARGO_BIN_EXE_smoothfs");

/// How long `Pool::mount` waits for the FUSE mount to appear.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an unmounted daemon may take to exit (S1.4/A1: 5 s).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The filesystem type every smoothfs mount shows (S1.4 item 4).
pub const FSTYPE: &str = "fuse.smoothfs";

/// Exit status of a failed mount (S0, "Errors").
pub const MOUNT_FAILED: i32 = 32;

// ---------------------------------------------------------------------------
// Environment guard
// ---------------------------------------------------------------------------

/// Returns true when the test can run: root and `/dev/fuse` present.
///
/// Otherwise prints `SKIPPED: <reason>` straight to the process's stderr
/// (bypassing libtest's capture, so it shows even for a passing test) and
/// returns false; the caller returns early. Under CI (`CI=true`) a missing
/// prerequisite is a failure, never a silent pass.
#[must_use]
pub fn require_root_and_fuse() -> bool {
    let reason = if unsafe { libc::geteuid() } != 0 {
        Some("not running as root")
    } else if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing")
    } else {
        None
    };
    let Some(reason) = reason else {
        return true;
    };
    if in_ci() {
        panic!("CI=true but this test cannot run: {reason}");
    }
    let name = thread::current().name().unwrap_or("?").to_owned();
    let _ = writeln!(io::stderr(), "SKIPPED: {name}: {reason}");
    false
}

/// True when running under CI (`CI` set to anything but empty/false/0).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

fn describe(program: &str, args: &[&OsStr]) -> String {
    let mut s = program.to_owned();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion, returning its output (never panics on a
/// non-zero exit).
pub fn cmd<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Output {
    let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
    Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(program, &args)))
}

/// Runs a command and panics with its output unless it exits 0.
pub fn cmd_ok<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Output {
    let out = cmd(program, args);
    if !out.status.success() {
        let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        panic!(
            "`{}` failed with {}\nstdout: {}\nstderr: {}",
            describe(program, &args),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Waits for a child with a deadline; SIGKILLs it when the deadline passes.
/// Returns the status and whether it had to be killed.
pub fn wait_with_deadline(child: &mut Child, timeout: Duration) -> (ExitStatus, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (status, false),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let status = child.wait().expect("wait for killed child");
                return (status, true);
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for child {}: {e}", child.id()),
        }
    }
}

fn make_traversable(dir: &Path) {
    // tempfile creates 0700 directories; tests that act as `nobody` must be
    // able to reach the mountpoint.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod 0755 {}: {e}", dir.display()));
}

fn tempdir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temp dir");
    make_traversable(dir.path());
    dir
}

// ---------------------------------------------------------------------------
// Mount table
// ---------------------------------------------------------------------------

fn unescape_mountinfo(field: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &field[i + 1..i + 4];
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    pub options: String,
}

/// Every mount whose mount point is `path`, bottom to top.
pub fn mounts_at(path: &Path) -> Vec<MountEntry> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let mut found = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 6 || right.len() < 2 {
            continue;
        }
        let mount_point = PathBuf::from(unescape_mountinfo(left[4]));
        if mount_point == path {
            found.push(MountEntry {
                mount_point,
                fstype: right[0].to_owned(),
                source: unescape_mountinfo(right[1]),
                options: left[5].to_owned(),
            });
        }
    }
    found
}

/// The filesystem type of the topmost mount at `path`, if any.
pub fn fstype_at(path: &Path) -> Option<String> {
    mounts_at(path).pop().map(|m| m.fstype)
}

/// Unmounts `path`: plain umount, retried briefly on EBUSY, then lazy.
/// Returns true if a plain umount succeeded.
pub fn unmount_path(path: &Path) -> bool {
    for _ in 0..5 {
        if mounts_at(path).is_empty() {
            return true;
        }
        if cmd("umount", &[path]).status.success() {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    if !mounts_at(path).is_empty() {
        let _ = writeln!(
            io::stderr(),
            "harness: umount {} kept failing; detaching lazily",
            path.display()
        );
        let _ = cmd("umount", &[OsStr::new("-l"), path.as_os_str()]);
    }
    false
}

/// PIDs (other than ours) whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let line: Vec<u8> = raw.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
        if String::from_utf8_lossy(&line).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits until no process's command line contains `needle`.
pub fn wait_no_process_with(needle: &str, timeout: Duration) -> Result<(), Vec<i32>> {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = pids_with_cmdline(needle);
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(pids);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// Loop-backed tiers
// ---------------------------------------------------------------------------

/// A filesystem image on a loop device, mounted at a private directory.
pub struct LoopTier {
    fs: String,
    dev: String,
    mnt: PathBuf,
    mounted: bool,
    // Holds the image and the mountpoint; dropped after the fields above
    // are released in `Drop::drop`.
    dir: TempDir,
}

impl LoopTier {
    /// Creates a `size_mib` image, formats it with `fs` ("ext4" or "xfs"),
    /// attaches it to a free loop device and mounts it.
    pub fn new(fs: &str, size_mib: u64) -> LoopTier {
        let dir = tempdir("smoothfs-tier-");
        let image = dir.path().join("tier.img");
        File::create(&image)
            .and_then(|f| f.set_len(size_mib << 20))
            .expect("create tier image");
        match fs {
            "ext4" => cmd_ok(
                "mkfs.ext4",
                &[OsStr::new("-q"), OsStr::new("-F"), image.as_os_str()],
            ),
            "xfs" => cmd_ok(
                "mkfs.xfs",
                &[OsStr::new("-q"), OsStr::new("-f"), image.as_os_str()],
            ),
            other => panic!("LoopTier: unsupported filesystem {other:?}"),
        };
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).expect("create tier mountpoint");

        let mut tier = LoopTier {
            fs: fs.to_owned(),
            dev: String::new(),
            mnt,
            mounted: false,
            dir,
        };
        tier.dev = attach_loop(&image);
        cmd_ok("mount", &[OsStr::new(&tier.dev), tier.mnt.as_os_str()]);
        tier.mounted = true;
        tier
    }

    /// The tier directory (the root of the mounted image).
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// The loop device, e.g. `/dev/loop3`.
    pub fn dev(&self) -> &str {
        &self.dev
    }

    pub fn fs_type(&self) -> &str {
        &self.fs
    }

    /// The image file backing the loop device.
    pub fn image(&self) -> PathBuf {
        self.dir.path().join("tier.img")
    }

    /// `self.path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn statvfs(&self) -> libc::statvfs {
        statvfs(&self.mnt).expect("statvfs tier")
    }
}

fn attach_loop(image: &Path) -> String {
    // `losetup -f` can race with a parallel test taking the same free
    // device; losetup retries internally, and so do we.
    let mut last = String::new();
    for _ in 0..5 {
        let out = cmd(
            "losetup",
            &[OsStr::new("-f"), OsStr::new("--show"), image.as_os_str()],
        );
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        thread::sleep(Duration::from_millis(200));
    }
    panic!("losetup -f --show {}: {last}", image.display());
}

impl Drop for LoopTier {
    fn drop(&mut self) {
        if self.mounted {
            unmount_path(&self.mnt);
        }
        if !self.dev.is_empty() {
            // After a lazy unmount the device may still be busy; -d then sets
            // autoclear and the kernel detaches it once the last user goes.
            let out = cmd("losetup", &["-d", &self.dev]);
            if !out.status.success() {
                let _ = writeln!(
                    io::stderr(),
                    "harness: losetup -d {}: {}",
                    self.dev,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        // Detach is deferred while anything (udev's blkid, a lazily
        // unmounted filesystem) still holds the device; wait briefly so
        // devices do not pile up across tests.
        if let Some(name) = self.dev.strip_prefix("/dev/") {
            let backing = PathBuf::from(format!("/sys/block/{name}/loop/backing_file"));
            let deadline = Instant::now() + EXIT_TIMEOUT;
            while backing.exists() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
        // `dir` (image + mountpoint) is removed when the TempDir drops.
    }
}

/// statvfs(3) of a path.
pub fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    let c = cstr(path);
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// syncfs(2) of the filesystem holding `path`.
pub fn syncfs(path: &Path) {
    let dir = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        panic!("syncfs {}: {}", path.display(), io::Error::last_os_error());
    }
}

/// Used percentage as smoothfs's near-full test sees it (S5.1):
/// `(f_blocks - f_bavail) * 100 / f_blocks`.
pub fn used_pct(path: &Path) -> f64 {
    let s = statvfs(path).expect("statvfs");
    (s.f_blocks - s.f_bavail) as f64 * 100.0 / s.f_blocks as f64
}

/// Fills the filesystem holding `tier` until `(blocks - bavail) * 100 >=
/// blocks * pct`, with filler files made by fallocate directly on the lower
/// (`smoothfs-test-filler-N` at the tier root). Call it on the lower tier
/// path, never on the mount.
pub fn fill_to_pct(tier: &Path, pct: u64) {
    assert!(
        (1..=100).contains(&pct),
        "fill_to_pct: pct {pct} out of range"
    );
    for n in 0..64 {
        // Settle delayed allocation first, so the numbers do not shrink
        // after the fill (xfs trims speculative preallocation later too;
        // callers that need a margin ask for a higher pct).
        syncfs(tier);
        let s = statvfs(tier).expect("statvfs tier");
        let (blocks, bavail, bfree, frsize) = (s.f_blocks, s.f_bavail, s.f_bfree, s.f_frsize);
        if (blocks - bavail) * 100 >= blocks * pct {
            return;
        }
        let need = (blocks * pct).div_ceil(100) - (blocks - bavail);
        // Root may also use ext4's reserved blocks (bfree), which is what
        // fallocate by root draws from last; never ask for more than bfree.
        let mut len = need.min(bfree.saturating_sub(1)).max(1) * frsize;
        let path = tier.join(format!("smoothfs-test-filler-{n}"));
        let file = File::create(&path).expect("create filler");
        loop {
            let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
            if rc == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOSPC) && len > frsize {
                len /= 2;
                continue;
            }
            panic!("fallocate {} bytes on {}: {err}", len, path.display());
        }
        file.sync_all().expect("fsync filler");
    }
    panic!(
        "fill_to_pct({}, {pct}) did not converge: used {:.2}%",
        tier.display(),
        used_pct(tier)
    );
}

// ---------------------------------------------------------------------------
// Pools
// ---------------------------------------------------------------------------

/// A smoothfs pool run in the foreground (`smoothfs mount -f`) as a child of
/// the test, mounted on a private temporary directory.
pub struct Pool {
    name: String,
    uuid: String,
    tiers: Vec<PathBuf>,
    extra_opts: String,
    mnt: TempDir,
    log_dir: TempDir,
    child: Option<Child>,
    watchdog: Option<Arc<AtomicBool>>,
    /// Extra environment for the daemon (e.g. SMOOTHFS_FAILPOINTS).
    env: Vec<(String, String)>,
}

impl Pool {
    /// Environment for the next start of the daemon (remount).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    pub fn clear_env(&mut self) {
        self.env.clear();
    }

    /// Mounts like [`Pool::mount`] with extra daemon environment.
    pub fn mount_with_env(tiers: &[&Path], extra_opts: &str, env: &[(&str, &str)]) -> Pool {
        let uuid = uuid::Uuid::new_v4().to_string();
        let mut pool = Pool {
            name: format!("t{}", &uuid[..8]),
            uuid,
            tiers: tiers.iter().map(|t| t.to_path_buf()).collect(),
            extra_opts: extra_opts.to_owned(),
            mnt: tempdir("smoothfs-mnt-"),
            log_dir: tempfile::Builder::new()
                .prefix("smoothfs-log-")
                .tempdir()
                .expect("create log dir"),
            child: None,
            watchdog: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        pool.start().unwrap_or_else(|e| panic!("{e}"));
        pool
    }

    /// The daemon died on its own (a crash failpoint): wait for it, then
    /// clear the dead mount. Panics if it is still running after `timeout`.
    pub fn wait_crashed(&mut self, timeout: Duration) -> ExitStatus {
        self.stop_watchdog();
        let mut child = self.child.take().expect("Pool::wait_crashed: not mounted");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                unmount_path(self.mnt.path());
                return st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                unmount_path(self.mnt.path());
                panic!("daemon did not crash within {timeout:?}\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    /// Mounts a pool over `tiers` with a fresh random UUID. `extra_opts` is
    /// appended to the `-o` string (empty for none). Panics, with the
    /// daemon's log, if the mount is not live within [`MOUNT_TIMEOUT`].
    pub fn mount(tiers: &[&Path], extra_opts: &str) -> Pool {
        Pool::try_mount(tiers, extra_opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Pool::mount`], returning the failure (with the daemon's log).
    pub fn try_mount(tiers: &[&Path], extra_opts: &str) -> Result<Pool, String> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let mut pool = Pool {
            name: format!("t{}", &uuid[..8]),
            uuid,
            tiers: tiers.iter().map(|t| t.to_path_buf()).collect(),
            extra_opts: extra_opts.to_owned(),
            mnt: tempdir("smoothfs-mnt-"),
            log_dir: tempfile::Builder::new()
                .prefix("smoothfs-log-")
                .tempdir()
                .expect("create log dir"),
            child: None,
            watchdog: None,
            env: Vec::new(),
        };
        pool.start()?;
        Ok(pool)
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        self.mnt.path()
    }

    /// `self.path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.path().join(rel)
    }

    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tiers(&self) -> &[PathBuf] {
        &self.tiers
    }

    /// The full `-o` string used for this pool.
    pub fn options(&self) -> String {
        let tiers: Vec<String> = self
            .tiers
            .iter()
            .map(|t| t.to_string_lossy().into_owned())
            .collect();
        let mut opts = format!(
            "pool={},uuid={},tiers={}",
            self.name,
            self.uuid,
            tiers.join(":")
        );
        if !self.extra_opts.is_empty() {
            opts.push(',');
            opts.push_str(&self.extra_opts);
        }
        opts
    }

    /// PID of the running daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the daemon(s) of this pool wrote to stdout/stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.log_dir.path().join("daemon.log")
    }

    fn start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "Pool::start with a daemon running");
        let opts = self.options();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open daemon log");
        let _ = writeln!(
            log,
            "=== {SMOOTHFS} mount -f -o {opts} none {} ===",
            self.path().display()
        );
        let child = Command::new(SMOOTHFS)
            .args(["mount", "-f", "-o", &opts, "none"])
            .arg(self.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot spawn {SMOOTHFS}: {e}"))?;
        let pid = child.id();
        self.child = Some(child);

        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("child");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                unmount_path(self.mnt.path());
                return Err(format!(
                    "smoothfs daemon exited with {status} before the mount was live \
                     (opts {opts})\n--- daemon log ---\n{}",
                    self.log()
                ));
            }
            if fstype_at(self.mnt.path()).as_deref() == Some(FSTYPE) {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                unmount_path(self.mnt.path());
                return Err(format!(
                    "smoothfs mount at {} not live after {:?} (opts {opts}); mounts there: {:?}\n\
                     --- daemon log ---\n{}",
                    self.mnt.path().display(),
                    MOUNT_TIMEOUT,
                    mounts_at(self.path()),
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.watchdog = Some(spawn_watchdog(pid));
        // The mount is in the table; make sure the daemon answers requests
        // (st_dev of the root is the FUSE connection's, not the parent's).
        let root_dev = fs::metadata(self.path())
            .map_err(|e| format!("stat of the fresh mount failed: {e}\n{}", self.log()))?
            .dev();
        let parent_dev = fs::metadata(self.mnt.path().parent().expect("parent"))
            .expect("stat parent")
            .dev();
        if root_dev == parent_dev {
            return Err(format!(
                "mount root has the parent's st_dev\n{}",
                self.log()
            ));
        }
        Ok(())
    }

    fn stop_watchdog(&mut self) {
        if let Some(flag) = self.watchdog.take() {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Unmounts with `umount` (lazy fallback) and waits for the daemon to
    /// exit; returns its exit status. SIGKILLs it after [`EXIT_TIMEOUT`]
    /// and panics in that case.
    pub fn unmount(&mut self) -> ExitStatus {
        self.stop_watchdog();
        let clean = unmount_path(self.mnt.path());
        let mut child = self.child.take().expect("Pool::unmount: not mounted");
        let (status, killed) = wait_with_deadline(&mut child, EXIT_TIMEOUT);
        assert!(
            !killed,
            "daemon did not exit within {EXIT_TIMEOUT:?} after umount\n{}",
            self.log()
        );
        assert!(
            clean,
            "umount {} failed\n{}",
            self.path().display(),
            self.log()
        );
        status
    }

    /// SIGKILLs the daemon (a crash), then clears the dead mount so the
    /// pool can be mounted again at the same place.
    pub fn kill9(&mut self) {
        self.stop_watchdog();
        let mut child = self.child.take().expect("Pool::kill9: not mounted");
        let _ = child.kill();
        let _ = child.wait();
        unmount_path(self.mnt.path());
    }

    /// Mounts the same pool (same name, UUID and tiers) again at the same
    /// mountpoint, unmounting cleanly first if it is still running.
    pub fn remount(&mut self) {
        if self.child.is_some() {
            let status = self.unmount();
            assert!(
                status.success(),
                "daemon exited with {status}\n{}",
                self.log()
            );
        }
        self.start()
            .unwrap_or_else(|e| panic!("remount failed: {e}"));
    }

    /// Remounts with the tiers listed in a different order (S1.2 item 3).
    pub fn remount_with_tiers(&mut self, tiers: &[&Path]) {
        if self.child.is_some() {
            let status = self.unmount();
            assert!(
                status.success(),
                "daemon exited with {status}\n{}",
                self.log()
            );
        }
        self.tiers = tiers.iter().map(|t| t.to_path_buf()).collect();
        self.start()
            .unwrap_or_else(|e| panic!("remount failed: {e}"));
    }
}

fn spawn_watchdog(pid: u32) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let secs = std::env::var("SMOOTHFS_TEST_WATCHDOG_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300u64);
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if flag.load(Ordering::SeqCst) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        if !flag.load(Ordering::SeqCst) {
            let _ = writeln!(
                io::stderr(),
                "harness watchdog: pool daemon {pid} still mounted after {secs} s; SIGKILL"
            );
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    done
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop_watchdog();
        if let Some(mut child) = self.child.take() {
            unmount_path(self.mnt.path());
            let (status, killed) = wait_with_deadline(&mut child, EXIT_TIMEOUT);
            if killed {
                let _ = writeln!(
                    io::stderr(),
                    "harness: daemon {} did not exit after umount; killed",
                    child.id()
                );
            } else if !status.success() {
                let _ = writeln!(io::stderr(), "harness: daemon exited with {status}");
            }
        }
        // A dead connection left by kill9 without remount.
        if !mounts_at(self.mnt.path()).is_empty() {
            unmount_path(self.mnt.path());
        }
        if thread::panicking() {
            // Captured by libtest and shown with the failing test.
            eprintln!(
                "--- smoothfs daemon log ({}) ---\n{}--- end of daemon log ---",
                self.options(),
                self.log()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// One-shot `smoothfs mount` (daemonising form) for failure tests
// ---------------------------------------------------------------------------

/// What one `smoothfs mount -o OPTS none MNT` did.
#[derive(Debug)]
pub struct MountAttempt {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Whether something was mounted at MNT when the command returned.
    pub mounted: bool,
    /// Processes still naming MNT on their command line (leftover daemons).
    pub leftover_pids: Vec<i32>,
}

impl MountAttempt {
    /// Asserts S0's failure contract: exit 32, nothing mounted, and a line
    /// `smoothfs: mount failed: <errno>: <message>` whose message contains
    /// every word in `mentions`.
    pub fn assert_failed_with(&self, errno: &str, mentions: &[&str]) {
        assert_eq!(
            self.code,
            Some(MOUNT_FAILED),
            "expected exit {MOUNT_FAILED} ({errno}): {self:#?}"
        );
        assert!(
            !self.mounted,
            "a failed mount left something mounted: {self:#?}"
        );
        let prefix = format!("smoothfs: mount failed: {errno}: ");
        let line = self
            .stderr
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no `{prefix}...` line on stderr: {self:#?}"));
        for word in mentions {
            assert!(
                line.contains(word),
                "failure message {line:?} does not mention {word:?}"
            );
        }
    }
}

/// Runs `smoothfs mount -o opts none mnt` (the daemonising form) with a
/// 30 s limit, records what happened, then cleans up anything it left.
pub fn smoothfs_mount_once(opts: &str, mnt: &Path) -> MountAttempt {
    let args = [
        OsStr::new("mount"),
        OsStr::new("-o"),
        OsStr::new(opts),
        OsStr::new("none"),
        mnt.as_os_str(),
    ];
    let (code, stdout, stderr) = cmd_timeout(SMOOTHFS, &args, Duration::from_secs(30));
    let mounted = !mounts_at(mnt).is_empty();
    // Give a wrongly daemonised child a moment to show up before looking.
    thread::sleep(Duration::from_millis(100));
    let leftover_pids = pids_with_cmdline(&mnt.to_string_lossy());
    if mounted {
        unmount_path(mnt);
    }
    for pid in &leftover_pids {
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    MountAttempt {
        code,
        stdout,
        stderr,
        mounted,
        leftover_pids,
    }
}

// ---------------------------------------------------------------------------
// File helpers
// ---------------------------------------------------------------------------

/// NUL-terminated copy of a path.
pub fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// Lower-case hex SHA-256 of a file's content.
pub fn sha256_file(path: &Path) -> String {
    let mut file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex(&hasher.finalize())
}

/// Lower-case hex SHA-256 of a buffer.
pub fn sha256_bytes(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic pseudo-random bytes (xorshift64*), so a failure can be
/// reproduced from the seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` to a new file and fsyncs it (and its directory).
pub fn write_synced(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    f.sync_all()
        .unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .unwrap_or_else(|e| panic!("fsync dir {}: {e}", parent.display()));
    }
}

/// lgetxattr(2): the value of `name` on `path` (not following symlinks).
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let p = cstr(path);
    let n = CString::new(name).expect("xattr name");
    let mut buf = vec![0u8; 65536];
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(len as usize);
    Ok(buf)
}

/// lsetxattr(2) with flags 0.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cstr(path);
    let n = CString::new(name).expect("xattr name");
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// llistxattr(2): every xattr name on `path`.
pub fn list_xattr(path: &Path) -> io::Result<Vec<String>> {
    let p = cstr(path);
    let mut buf = vec![0u8; 65536];
    let len = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(len as usize);
    Ok(buf
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// `st_ino` of `path` (lstat).
pub fn ino_of(path: &Path) -> u64 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()))
        .ino()
}

/// The inode number smoothfs derives from an OID (S3.2):
/// xxh64(oid, seed 0) with bit 63 set.
pub fn ino_from_oid(oid: &[u8]) -> u64 {
    xxhash_rust::xxh64::xxh64(oid, 0) | (1 << 63)
}

/// The OID stored on a lower entry (`trusted.smoothfs.oid`).
pub fn lower_oid(lower: &Path) -> Vec<u8> {
    get_xattr(lower, "trusted.smoothfs.oid")
        .unwrap_or_else(|e| panic!("trusted.smoothfs.oid of {}: {e}", lower.display()))
}

/// The raw errno of an io::Error (panics if it has none).
pub fn errno(err: &io::Error) -> i32 {
    err.raw_os_error()
        .unwrap_or_else(|| panic!("error without errno: {err}"))
}

/// Asserts that `result` failed with `expected` errno.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(result: io::Result<T>, expected: i32, what: &str) {
    match result {
        Ok(v) => panic!("{what}: expected errno {expected}, got success {v:?}"),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(expected),
            "{what}: expected errno {expected} ({}), got {e}",
            io::Error::from_raw_os_error(expected)
        ),
    }
}

/// Which of `tiers` hold an entry at `rel` (lstat succeeds).
pub fn tiers_holding(tiers: &[&Path], rel: impl AsRef<Path>) -> Vec<usize> {
    let rel = rel.as_ref();
    tiers
        .iter()
        .enumerate()
        .filter(|(_, t)| fs::symlink_metadata(t.join(rel)).is_ok())
        .map(|(i, _)| i)
        .collect()
}

/// Sleeps past smoothfs's statfs snapshot lifetime (S5.1: at most 1 s), so a
/// tier filled on the lower is seen as near full by the next create.
pub fn wait_statfs_refresh() {
    thread::sleep(Duration::from_millis(1200));
}

/// Drops the kernel's clean caches (dentries, inodes; `2` in drop_caches).
pub fn drop_inode_caches() {
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "2").expect("write /proc/sys/vm/drop_caches");
}

/// Runs a command with a time limit; returns (exit code, stdout, stderr).
/// A command still running at the limit is SIGKILLed and reported as
/// code `None` with a note on stderr.
pub fn cmd_timeout<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    timeout: Duration,
) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("temp dir for command output");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    // Files, not pipes: a daemonising child may keep its inherited
    // descriptors open long after the command itself returns.
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let (status, killed) = wait_with_deadline(&mut child, timeout);
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let mut stderr = fs::read_to_string(&err_path).unwrap_or_default();
    if killed {
        stderr.push_str(&format!("\n[harness: killed after {timeout:?}]"));
        return (None, stdout, stderr);
    }
    (status.code(), stdout, stderr)
}

/// Unmounts a path on drop if something is still mounted there, and kills
/// processes whose command line names `needle` (a pool UUID): cleanup for
/// tests that mount without a [`Pool`].
pub struct MountGuard {
    pub path: PathBuf,
    pub needle: String,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if !mounts_at(&self.path).is_empty() {
            unmount_path(&self.path);
        }
        if !self.needle.is_empty() && wait_no_process_with(&self.needle, EXIT_TIMEOUT).is_err() {
            for pid in pids_with_cmdline(&self.needle) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// A private temporary directory (mode 0755), e.g. for a mountpoint.
pub fn scratch_dir(prefix: &str) -> TempDir {
    tempdir(prefix)
}

// ---------------------------------------------------------------------------
// Two-tier fixture
// ---------------------------------------------------------------------------

/// The common case: a pool over two fresh loop-backed tiers (512 MiB each,
/// the size SPEC S0 assumes). Field order is drop order: the pool is
/// unmounted before its tiers go.
pub struct TwoTierPool {
    pub pool: Pool,
    pub t0: LoopTier,
    pub t1: LoopTier,
}

impl TwoTierPool {
    /// Tier 0 of type `fs0`, tier 1 of type `fs1`, mounted with `extra_opts`.
    pub fn new(fs0: &str, fs1: &str, extra_opts: &str) -> TwoTierPool {
        TwoTierPool::with_lowers(fs0, fs1, extra_opts, |_, _| {})
    }

    /// As [`TwoTierPool::new`], calling `prepare(tier0, tier1)` on the
    /// lowers before the pool is mounted (out-of-band content).
    pub fn with_lowers(
        fs0: &str,
        fs1: &str,
        extra_opts: &str,
        prepare: impl FnOnce(&Path, &Path),
    ) -> TwoTierPool {
        let t0 = LoopTier::new(fs0, 512);
        let t1 = LoopTier::new(fs1, 512);
        prepare(t0.path(), t1.path());
        let pool = Pool::mount(&[t0.path(), t1.path()], extra_opts);
        TwoTierPool { pool, t0, t1 }
    }

    /// `[tier 0, tier 1]` lower roots.
    pub fn tiers(&self) -> [&Path; 2] {
        [self.t0.path(), self.t1.path()]
    }

    /// A path through the mount.
    pub fn mnt(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.pool.join(rel)
    }

    /// Ranks of the tiers holding `rel` on their lower.
    pub fn holders(&self, rel: impl AsRef<Path>) -> Vec<usize> {
        tiers_holding(&self.tiers(), rel)
    }

    /// The one lower entry backing `rel`; panics if none or several.
    pub fn lower(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        let holders = self.holders(rel);
        assert_eq!(
            holders.len(),
            1,
            "{} should be on exactly one tier, found on {holders:?}",
            rel.display()
        );
        self.tiers()[holders[0]].join(rel)
    }

    /// Fills tier 0 past 98 % (the default `full_pct`) on the lower and
    /// waits out the daemon's statfs snapshot, so new creates spill to
    /// tier 1. The fill aims at 99 %: space the lower frees later (xfs
    /// trimming speculative preallocation of files written just before)
    /// must not bring it back under the threshold.
    pub fn fill_tier0(&self) {
        fill_to_pct(self.t0.path(), 99);
        wait_statfs_refresh();
        let used = used_pct(self.t0.path());
        assert!(
            used >= 98.0,
            "tier 0 fell back to {used:.2}% used after the fill"
        );
    }
}

/// A new read-write shared mapping of the first `len` bytes of `f`
/// (asserted to succeed); the caller unmaps it.
pub fn map_shared_rw(f: &File, len: usize) -> *mut libc::c_void {
    // SAFETY: a new mapping of an open descriptor; nothing aliases it yet.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        map,
        libc::MAP_FAILED,
        "mmap: {}",
        io::Error::last_os_error()
    );
    map
}
