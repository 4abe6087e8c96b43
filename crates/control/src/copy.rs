//! Copying one object's bytes and metadata from its source lower file to a
//! staging file on the destination tier (SPEC S10.3, S10.4), and verifying
//! the result (S10.2 W8).
//!
//! Owns: the copy method ladder (FICLONE → `copy_file_range` → read/write),
//! sparse-range discovery, the BLAKE3 of the logical file, metadata
//! transfer and its verification, the bandwidth [`Throttle`], cancellation
//! and progress reporting. It needs no mount and no control socket, so it
//! is unit-tested on plain temp files.
//!
//! Must never: write to the source, follow a symlink as the source (the
//! data plane only hands out regular lower files; `O_NOFOLLOW` makes sure),
//! remove a staging file (the worker and the data plane decide that), or
//! report success without both hashes and the metadata comparing equal.
//!
//! Invariant: the BLAKE3 in a [`CopyReport`] covers the *logical* source
//! file — holes hash as zeros — so it compares equal to a hash of the
//! staging file whatever method and whichever holes either side has.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{Advice, FallocateFlags, IFlags, SeekFrom, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use smoothfs_uapi::error::errno_name;
use smoothfs_uapi::failpoint;

/// `move_chunk_bytes` default (S10.3/1, S29.2).
pub const DEFAULT_CHUNK_BYTES: usize = 8 << 20;
/// Smallest and largest accepted `move_chunk_bytes` (S29.2).
pub const MIN_CHUNK_BYTES: usize = 64 << 10;
pub const MAX_CHUNK_BYTES: usize = 256 << 20;
/// Granularity of zero-block detection and buffer alignment (S10.3/2).
const BLOCK: usize = 4096;
/// Longest a throttle wait sleeps before rechecking the cancel flag.
const CANCEL_TICK: Duration = Duration::from_millis(100);
/// Progress is reported at most this often (plus once at the start and
/// once at the end), and at least this often while chunks keep completing.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// The failpoint evaluated once per copied chunk.
pub const FAILPOINT_COPY: &str = "worker_copy";

static ZEROS: [u8; 64 << 10] = [0u8; 64 << 10];

// ---------------------------------------------------------------------------
// Errors and results
// ---------------------------------------------------------------------------

/// Why a copy or its verification failed. The `Display` text starts with
/// the spec's failure reason where there is one (`checksum mismatch`,
/// `metadata mismatch`), because the worker uses it as FAILURE_REASON.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// The cancel flag was raised; the staging file is left in place.
    #[error("cancelled")]
    Cancelled,
    /// The staging file's bytes do not hash like the source's.
    #[error("checksum mismatch: source {source_blake3}, staging {staging_blake3}")]
    ChecksumMismatch {
        source_blake3: String,
        staging_blake3: String,
    },
    /// xattrs, mode, owner or mtime of the staging file differ.
    #[error("metadata mismatch: {0}")]
    MetadataMismatch(String),
    /// The source ended early or otherwise changed under the copy.
    #[error("source changed during copy: {0}")]
    SourceChanged(String),
    /// The `worker_copy` failpoint fired with an `error(errno)` action.
    #[error("failpoint {FAILPOINT_COPY}: {}", errno_name(*.0))]
    Failpoint(i32),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl CopyError {
    fn io(context: impl Into<String>, source: impl Into<io::Error>) -> CopyError {
        CopyError::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    /// The errno this failure stands for.
    pub fn errno(&self) -> i32 {
        match self {
            CopyError::Cancelled => libc::ECANCELED,
            CopyError::ChecksumMismatch { .. } | CopyError::MetadataMismatch(_) => libc::EIO,
            CopyError::SourceChanged(_) => libc::ESTALE,
            CopyError::Failpoint(e) => *e,
            CopyError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// Which method moved the bytes (S10.3/1). Also the `method` of the
/// movement log payload and of `smoothfs_move_bytes_total{method}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CopyMethod {
    /// FICLONE: the destination shares the source's extents.
    Reflink,
    /// `copy_file_range` over the data ranges.
    CopyFileRange,
    /// Userspace read/write (also used when a faster method gave up part
    /// way through).
    Stream,
}

impl CopyMethod {
    pub const fn as_str(self) -> &'static str {
        match self {
            CopyMethod::Reflink => "reflink",
            CopyMethod::CopyFileRange => "copy_file_range",
            CopyMethod::Stream => "stream",
        }
    }
}

impl std::fmt::Display for CopyMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the source looked like when the copy started; W9 compares the
/// source against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceSnapshot {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    /// Inode change time: moves on every write, truncate, chmod, chown,
    /// xattr change and utimes, and cannot be set back by a user.
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
}

impl SourceSnapshot {
    fn of(m: &std::fs::Metadata) -> SourceSnapshot {
        SourceSnapshot {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            blocks: m.blocks(),
            mtime_sec: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime_sec: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }

    /// Same inode change time: nothing about the file changed in between.
    pub fn same_ctime(&self, other: &SourceSnapshot) -> bool {
        self.ctime_sec == other.ctime_sec && self.ctime_nsec == other.ctime_nsec
    }

    /// Whether the file has fewer bytes allocated than its size (S10.2 W6
    /// preallocates only files that are not sparse).
    pub fn is_sparse(&self) -> bool {
        self.blocks.saturating_mul(512) < self.size
    }

    /// `lstat` of `path` taken now, for the W9 comparison.
    pub fn lstat(path: &Path) -> Result<SourceSnapshot, CopyError> {
        let m = std::fs::symlink_metadata(path)
            .map_err(|e| CopyError::io(format!("lstat {}", path.display()), e))?;
        Ok(SourceSnapshot::of(&m))
    }

    /// Size and mtime equal (the W9 "unchanged" test).
    pub fn same_size_and_mtime(&self, other: &SourceSnapshot) -> bool {
        self.size == other.size
            && self.mtime_sec == other.mtime_sec
            && self.mtime_nsec == other.mtime_nsec
    }
}

/// The result of a successful [`copy_into`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyReport {
    /// Logical size of the source (and now of the staging file).
    pub bytes_total: u64,
    /// Bytes actually transferred: the data ranges, holes excluded (the
    /// whole size for a reflink).
    pub bytes_copied: u64,
    pub method: CopyMethod,
    /// BLAKE3 of the source's logical bytes, as hex.
    pub blake3: String,
    /// Wall time of data + metadata + fsync (not the verification).
    pub duration: Duration,
    /// The source as it was when the copy began.
    pub source: SourceSnapshot,
    /// SEEK_DATA/SEEK_HOLE worked on the source (else zero blocks were
    /// detected instead, S1.3/5).
    pub sparse_seek: bool,
    /// BLAKE3 of the staging file read back (from the page cache) chunk by
    /// chunk right after each write, for the stream method; `None` when
    /// [`verify_staging`] must read the staging file itself.
    pub staging_blake3: Option<String>,
    /// BLAKE3 of the source read again after the copy (with
    /// [`CopyOptions::rehash_source`]).
    pub source_rehash: Option<String>,
    /// `staging_blake3` was read with O_DIRECT from the device
    /// ([`CopyOptions::readback_direct`]).
    pub readback_direct: bool,
}

impl CopyReport {
    /// Throughput over [`CopyReport::duration`], in MiB/s of logical size.
    pub fn mib_per_s(&self) -> f64 {
        let s = self.duration.as_secs_f64();
        if s <= 0.0 {
            return 0.0;
        }
        self.bytes_total as f64 / (1024.0 * 1024.0) / s
    }
}

// ---------------------------------------------------------------------------
// Throttle
// ---------------------------------------------------------------------------

/// A token bucket limiting copied bytes per second (S10.3/5), shared by all
/// workers through an `Arc`. Rate 0 means unlimited; the rate can be
/// changed while copies run (the tunable `smoothfs_move_bandwidth_bytes_per_s`).
///
/// Bytes are paid for before they are copied: a request takes its tokens at
/// once, going into debt, and sleeps off the debt. The bucket starts empty
/// and holds at most 100 ms worth of tokens, so a copy never runs faster
/// than the rate by more than that burst.
#[derive(Debug)]
pub struct Throttle {
    rate: AtomicU64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// May be negative (debt).
    tokens: f64,
    last: Instant,
}

impl Throttle {
    pub fn new(bytes_per_s: u64) -> Throttle {
        Throttle {
            rate: AtomicU64::new(bytes_per_s),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                last: Instant::now(),
            }),
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    pub fn set_rate(&self, bytes_per_s: u64) {
        self.rate.store(bytes_per_s, Ordering::Relaxed);
    }

    /// How long a caller asking for `n` bytes now must wait; charges them.
    fn charge(&self, n: u64) -> Duration {
        let rate = self.rate();
        if rate == 0 {
            return Duration::ZERO;
        }
        let rate = rate as f64;
        let mut b = match self.bucket.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + elapsed * rate).min(rate * 0.1);
        b.tokens -= n as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / rate)
        }
    }

    /// Take `n` bytes, sleeping as long as the rate requires. Returns
    /// [`CopyError::Cancelled`] as soon as `cancel` is raised while waiting.
    pub fn take(&self, n: u64, cancel: Option<&AtomicBool>) -> Result<(), CopyError> {
        let wait = self.charge(n);
        let until = Instant::now() + wait;
        loop {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(CopyError::Cancelled);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep((until - now).min(CANCEL_TICK));
        }
    }
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/// How to copy. `Default` is the spec's defaults: 8 MiB chunks, every
/// method allowed, no throttle, no cancel flag.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// `move_chunk_bytes`; clamped to 64 KiB–256 MiB and rounded to 4 KiB.
    pub chunk_bytes: usize,
    /// Shared bandwidth limit; `None` (or rate 0) is unlimited.
    pub throttle: Option<Arc<Throttle>>,
    /// Raised by `smoothfs move abort` or Ctrl-C; checked per chunk and
    /// during throttle waits.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Try FICLONE when source and staging share a filesystem.
    pub allow_reflink: bool,
    /// Try `copy_file_range` before the read/write loop.
    pub allow_copy_file_range: bool,
    /// Re-hash the source after the copy (W9), concurrently with applying
    /// metadata and fsyncing the staging file; the result is in
    /// [`CopyReport::source_rehash`].
    pub rehash_source: bool,
    /// `smoothfs_verify_readback = direct` (S10.3/4): W8 reads the staging
    /// file back with O_DIRECT once it is durable, so its hash covers the
    /// bytes the device returns rather than the page cache's. On a
    /// filesystem that refuses O_DIRECT the read goes through the page
    /// cache, with a warning ([`CopyReport::readback_direct`] says which).
    pub readback_direct: bool,
}

impl Default for CopyOptions {
    fn default() -> CopyOptions {
        CopyOptions {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            throttle: None,
            cancel: None,
            allow_reflink: true,
            allow_copy_file_range: true,
            rehash_source: false,
            readback_direct: false,
        }
    }
}

impl CopyOptions {
    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    fn check_cancel(&self) -> Result<(), CopyError> {
        if self.cancelled() {
            Err(CopyError::Cancelled)
        } else {
            Ok(())
        }
    }

    fn throttle_rate(&self) -> u64 {
        self.throttle.as_ref().map_or(0, |t| t.rate())
    }

    /// The chunk actually used: under a throttle, about an eighth of a
    /// second's worth, so progress and cancellation stay responsive.
    fn effective_chunk(&self) -> usize {
        let mut chunk = self.chunk_bytes.clamp(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES);
        let rate = self.throttle_rate();
        if rate > 0 {
            let per_tick = usize::try_from(rate / 8).unwrap_or(usize::MAX);
            chunk = chunk.min(per_tick.max(MIN_CHUNK_BYTES));
        }
        (chunk / BLOCK).max(1) * BLOCK
    }

    fn pay(&self, n: u64) -> Result<(), CopyError> {
        match &self.throttle {
            Some(t) => t.take(n, self.cancel.as_deref()),
            None => Ok(()),
        }
    }
}

/// Calls the caller's progress callback no more often than
/// [`PROGRESS_EVERY`], except for the first and the final call.
struct Progress<'a> {
    f: &'a mut dyn FnMut(u64, u64),
    total: u64,
    done: u64,
    last: Option<Instant>,
}

impl<'a> Progress<'a> {
    fn new(f: &'a mut dyn FnMut(u64, u64), total: u64) -> Progress<'a> {
        let mut p = Progress {
            f,
            total,
            done: 0,
            last: None,
        };
        p.report(true);
        p
    }

    fn add(&mut self, n: u64) {
        self.done = self.done.saturating_add(n).min(self.total);
        self.report(false);
    }

    fn report(&mut self, force: bool) {
        let now = Instant::now();
        if force
            || self
                .last
                .is_none_or(|l| now.duration_since(l) >= PROGRESS_EVERY)
        {
            self.last = Some(now);
            (self.f)(self.done, self.total);
        }
    }

    fn finish(&mut self) {
        self.done = self.total;
        self.report(true);
    }
}

fn failpoint_copy() -> Result<(), CopyError> {
    failpoint::hit(FAILPOINT_COPY).map_err(CopyError::Failpoint)
}

// ---------------------------------------------------------------------------
// Opening
// ---------------------------------------------------------------------------

/// Open a lower file for reading without touching its atime (S10.3/3):
/// O_RDONLY|O_NOATIME|O_NOFOLLOW, retried without O_NOATIME on EPERM (a
/// caller that neither owns the file nor has CAP_FOWNER).
pub fn open_source(path: &Path) -> Result<File, CopyError> {
    let open = |flags: i32| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags | libc::O_NOFOLLOW)
            .open(path)
    };
    match open(libc::O_NOATIME) {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            open(0).map_err(|e| CopyError::io(format!("open {}", path.display()), e))
        }
        Err(e) => Err(CopyError::io(format!("open {}", path.display()), e)),
    }
}

/// The staging file: created with O_CREAT|O_EXCL, mode 0600 until the
/// source's metadata is applied (S10.3/3).
#[derive(Debug)]
pub struct Staging {
    file: File,
    path: PathBuf,
}

impl Staging {
    /// Create `path`; fails with EEXIST if anything is there.
    pub fn create(path: &Path) -> Result<Staging, CopyError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            // O_NOATIME: the staging file is hashed while its metadata,
            // times included, is applied; a read must not move the atime
            // just copied from the source. The creator owns the file, so
            // the flag is always allowed.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME)
            .open(path)
            .map_err(|e| CopyError::io(format!("create staging {}", path.display()), e))?;
        Ok(Staging {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reserve `len` bytes (S10.2 W6). ENOSPC is an error; a filesystem
    /// without fallocate is not.
    pub fn preallocate(&self, len: u64) -> Result<(), CopyError> {
        if len == 0 {
            return Ok(());
        }
        match rustix::fs::fallocate(&self.file, FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            Err(Errno::OPNOTSUPP) | Err(Errno::NOSYS) => Ok(()),
            Err(e) => Err(CopyError::io(
                format!("preallocate {len} bytes for {}", self.path.display()),
                e,
            )),
        }
    }
}

// ---------------------------------------------------------------------------
// Sparse ranges and hashing
// ---------------------------------------------------------------------------

/// The data ranges `[start, end)` of the first `size` bytes of `f`, found
/// with SEEK_DATA/SEEK_HOLE. The flag is false when the filesystem does not
/// support those seeks; the whole file is then one range.
fn data_ranges(f: &File, size: u64) -> Result<(Vec<(u64, u64)>, bool), CopyError> {
    if size == 0 {
        return Ok((Vec::new(), true));
    }
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(f, SeekFrom::Data(pos)) {
            Ok(s) => s,
            // No data at or after pos: the rest is a hole.
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL) | Err(Errno::OPNOTSUPP) | Err(Errno::NOSYS) if pos == 0 => {
                return Ok((vec![(0, size)], false));
            }
            Err(e) => return Err(CopyError::io("SEEK_DATA", e)),
        };
        if start >= size {
            break;
        }
        let end = match rustix::fs::seek(f, SeekFrom::Hole(start)) {
            Ok(h) => h.min(size),
            Err(Errno::NXIO) => size,
            Err(e) => return Err(CopyError::io("SEEK_HOLE", e)),
        };
        if end <= start {
            // A filesystem answering nonsense; copy the rest as data.
            out.push((start, size));
            break;
        }
        out.push((start, end));
        pos = end;
    }
    Ok((out, true))
}

fn hash_zeros(h: &mut blake3::Hasher, mut n: u64) {
    while n > 0 {
        let k = usize::try_from(n).unwrap_or(usize::MAX).min(ZEROS.len());
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// A buffer whose usable part starts on a 4 KiB boundary (S10.3/1), made
/// without `unsafe` by over-allocating and skipping to the boundary.
struct AlignedBuf {
    storage: Vec<u8>,
    offset: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let storage = vec![0u8; len + BLOCK];
        let offset = storage.as_ptr().align_offset(BLOCK).min(BLOCK);
        AlignedBuf {
            storage,
            offset,
            len,
        }
    }

    fn get_mut(&mut self, n: usize) -> &mut [u8] {
        let n = n.min(self.len);
        &mut self.storage[self.offset..self.offset + n]
    }
}

/// Fill `buf` from `f` at `off`; fails with [`CopyError::SourceChanged`]
/// when the file ends first.
/// Read `f` from `from` to `to` in pieces of at most `chunk` bytes
/// (`buf` holds at least that many), handing each piece to `use_bytes`.
fn read_range(
    f: &File,
    buf: &mut AlignedBuf,
    chunk: usize,
    from: u64,
    to: u64,
    what: &str,
    mut use_bytes: impl FnMut(&[u8]),
) -> Result<(), CopyError> {
    let mut o = from;
    while o < to {
        let n = usize::try_from(to - o).unwrap_or(usize::MAX).min(chunk);
        let b = buf.get_mut(n);
        read_exact_at(f, b, o, what)?;
        use_bytes(b);
        o += n as u64;
    }
    Ok(())
}

fn read_exact_at(f: &File, buf: &mut [u8], off: u64, what: &str) -> Result<(), CopyError> {
    let mut done = 0usize;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => {
                return Err(CopyError::SourceChanged(format!(
                    "{what} ended at {} bytes, expected at least {}",
                    off + done as u64,
                    off + buf.len() as u64
                )));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CopyError::io(format!("read {what} at {off}"), e)),
        }
    }
    Ok(())
}

/// BLAKE3 of the first `size` logical bytes of `f`, reading only its data
/// ranges (holes hash as zeros). Checks `cancel` per chunk.
fn hash_open_file(
    f: &File,
    size: u64,
    what: &str,
    cancel: Option<&AtomicBool>,
    mapped: bool,
) -> Result<blake3::Hash, CopyError> {
    // With `mapped`, windows of the file are mapped and hashed in place (no
    // copy into a buffer), spread over the cores: this read is usually
    // served from the page cache (S10.3 item 4), so copying it would cost
    // more than hashing. Only for files nobody else can shrink (the staging
    // file): reading a mapped page past a shrunken end raises SIGBUS. The
    // source, which a client may truncate during a move, is read with
    // pread.
    const WINDOW: u64 = 64 << 20;
    let (ranges, _) = data_ranges(f, size)?;
    let mut h = blake3::Hasher::new();
    let mut hashed = 0u64;
    for (start, end) in ranges {
        hash_zeros(&mut h, start - hashed);
        let mut off = start;
        while off < end {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(CopyError::Cancelled);
            }
            // Map from a page boundary; hash from `off`.
            let base = off & !(BLOCK as u64 - 1);
            let len = (end - base).min(WINDOW);
            let skip = usize::try_from(off - base).unwrap_or(0);
            let map_len = usize::try_from(len).unwrap_or(usize::MAX);
            // Only the staging file is mapped (see above), and its size is
            // checked after mapping; pread is the fallback if mapping fails.
            let mapping = mapped
                .then(|| Mapping::new(f, base, map_len))
                .flatten()
                .filter(|_| f.metadata().is_ok_and(|m| m.len() >= base + len));
            match mapping {
                Some(map) => {
                    // SAFETY: the file covers the whole mapping (checked
                    // above) and nobody else can shrink the staging file.
                    let bytes = unsafe { map.bytes() };
                    h.update_rayon(&bytes[skip..]);
                }
                None => {
                    let mut buf = AlignedBuf::new(DEFAULT_CHUNK_BYTES);
                    read_range(
                        f,
                        &mut buf,
                        DEFAULT_CHUNK_BYTES,
                        off,
                        base + len,
                        what,
                        |b| {
                            h.update_rayon(b);
                        },
                    )?;
                }
            }
            off = base + len;
        }
        hashed = end;
    }
    hash_zeros(&mut h, size - hashed);
    Ok(h.finalize())
}

/// W8 with `smoothfs_verify_readback = direct`: BLAKE3 of the logical
/// staging file (holes as zeros) read with O_DIRECT, so the bytes come
/// from the device rather than the page cache. Call it once the file is
/// durable. `Ok(None)` when the filesystem refuses O_DIRECT.
fn hash_direct(
    path: &Path,
    size: u64,
    cancel: Option<&AtomicBool>,
) -> Result<Option<blake3::Hash>, CopyError> {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(e) => {
            return Err(CopyError::io(
                format!("open {} with O_DIRECT", path.display()),
                e,
            ));
        }
    };
    let align = BLOCK as u64;
    let (ranges, _) = data_ranges(&f, size)?;
    let mut h = blake3::Hasher::new();
    let mut buf = AlignedBuf::new(DEFAULT_CHUNK_BYTES);
    let mut hashed = 0u64;
    for (start, end) in ranges {
        let start = start.max(hashed);
        if start >= end {
            continue;
        }
        hash_zeros(&mut h, start - hashed);
        // O_DIRECT wants block-aligned offsets and lengths: read whole
        // blocks and hash the part inside [start, end).
        let mut o = start - start % align;
        while o < end {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(CopyError::Cancelled);
            }
            let want = (end - o).div_ceil(align) * align;
            let k = usize::try_from(want)
                .unwrap_or(usize::MAX)
                .min(DEFAULT_CHUNK_BYTES);
            let b = buf.get_mut(k);
            let r = loop {
                match f.read_at(b, o) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            }
            .map_err(|e| CopyError::io(format!("O_DIRECT read of {} at {o}", path.display()), e))?;
            if r == 0 {
                return Err(CopyError::io(
                    format!("{} ends at {o}, before {end}", path.display()),
                    Errno::IO,
                ));
            }
            let lo = usize::try_from(start.saturating_sub(o)).unwrap_or(0);
            let hi = usize::try_from((end - o).min(r as u64)).unwrap_or(r);
            if lo < hi {
                h.update(&b[lo..hi]);
            }
            o += r as u64;
        }
        hashed = end;
    }
    hash_zeros(&mut h, size.saturating_sub(hashed));
    Ok(Some(h.finalize()))
}

/// BLAKE3 (hex) of the file at `path`, opened without updating its atime.
/// Used for the W9 re-hash of the source.
pub fn hash_file(path: &Path, cancel: Option<&AtomicBool>) -> Result<String, CopyError> {
    let f = open_source(path)?;
    let size = f
        .metadata()
        .map_err(|e| CopyError::io(format!("stat {}", path.display()), e))?
        .size();
    Ok(
        hash_open_file(&f, size, &path.display().to_string(), cancel, false)?
            .to_hex()
            .to_string(),
    )
}

/// Drop the page cache of `path` (POSIX_FADV_DONTNEED, S10.3/4). Best
/// effort: a failure only costs cache.
pub fn drop_cache(path: &Path) {
    if let Ok(f) = open_source(path) {
        drop_cache_fd(&f);
    }
}

/// Drop the page cache of the open file `f` (best effort).
pub fn drop_cache_fd(f: &File) {
    // Freeing pages is CPU work (about 50 ms per GiB here, on the move's
    // critical path): a large file is split over the cores, which
    // roughly halves it on two.
    const SPLIT_ABOVE: u64 = 64 << 20;
    let size = f.metadata().map_or(0, |m| m.len());
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) as u64;
    let drop_range = |off: u64, len: Option<NonZeroU64>| {
        if let Err(e) = rustix::fs::fadvise(f, off, len, Advice::DontNeed) {
            tracing::debug!(errno = e.raw_os_error(), "fadvise(DONTNEED) failed");
        }
    };
    if parts < 2 || size < SPLIT_ABOVE {
        drop_range(0, None);
        return;
    }
    let part = size.div_ceil(parts);
    std::thread::scope(|scope| {
        for i in 1..parts {
            // The last part runs to the end of the file, whatever its size
            // now.
            let len = (i + 1 < parts).then_some(part).and_then(NonZeroU64::new);
            scope.spawn(move || drop_range(i * part, len));
        }
        drop_range(0, NonZeroU64::new(part));
    });
}

// ---------------------------------------------------------------------------
// Data copy
// ---------------------------------------------------------------------------

/// Whether a faster method's error means "try the next method".
fn is_fallback(e: Errno) -> bool {
    matches!(
        e,
        Errno::XDEV | Errno::OPNOTSUPP | Errno::INVAL | Errno::NOSYS | Errno::NOTTY
    )
}

/// Write the non-zero 4 KiB blocks of `buf` to `dst` at `off`, leaving
/// all-zero blocks as holes (S10.3/2; the staging file reads as zeros
/// there, whether new or preallocated).
fn write_skipping_zeros(dst: &File, buf: &[u8], off: u64) -> Result<(), CopyError> {
    let mut i = 0usize;
    while i < buf.len() {
        let block_end = (i + BLOCK).min(buf.len());
        if buf[i..block_end] == ZEROS[..block_end - i] {
            i = block_end;
            continue;
        }
        // Extend the run over following non-zero blocks.
        let mut run_end = block_end;
        while run_end < buf.len() {
            let next = (run_end + BLOCK).min(buf.len());
            if buf[run_end..next] == ZEROS[..next - run_end] {
                break;
            }
            run_end = next;
        }
        dst.write_all_at(&buf[i..run_end], off + i as u64)
            .map_err(|e| CopyError::io(format!("write staging at {}", off + i as u64), e))?;
        i = run_end;
    }
    Ok(())
}

/// Copy the ranges from offset `from` on with read/write; returns the
/// bytes transferred. With `hasher` (only when `from` is 0) the data and
/// the holes between ranges are hashed as they go. With `skip_zeros`
/// (the source could not report its holes) all-zero 4 KiB blocks are left
/// as holes.
///
/// Pipelined: a reader thread fills buffers (throttle, cancel and the
/// `worker_copy` failpoint are checked there, per chunk) while this thread
/// hashes and writes the previous one, so source reads, hashing and
/// staging writes overlap (3 buffers in flight).
#[allow(clippy::too_many_arguments)]
fn stream_ranges(
    src: &File,
    dst: &File,
    ranges: &[(u64, u64)],
    from: u64,
    opts: &CopyOptions,
    progress: &mut Progress<'_>,
    mut hasher: Option<&mut blake3::Hasher>,
    skip_zeros: bool,
    mut readback: Option<&mut blake3::Hasher>,
) -> Result<u64, CopyError> {
    const IN_FLIGHT: usize = 3;
    let chunk = opts.effective_chunk();
    // Chunks to copy, in order, with the hole (for the hasher) before each.
    let mut plan: Vec<(u64, usize, u64)> = Vec::new();
    let mut hashed = 0u64;
    for &(start, end) in ranges {
        if end <= from {
            continue;
        }
        let start = start.max(from);
        let mut gap = start.saturating_sub(hashed);
        let mut off = start;
        while off < end {
            let n = usize::try_from(end - off).unwrap_or(usize::MAX).min(chunk);
            plan.push((off, n, gap));
            gap = 0;
            off += n as u64;
        }
        hashed = end;
    }
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<AlignedBuf>(IN_FLIGHT);
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<
        Result<(u64, usize, u64, AlignedBuf), CopyError>,
    >(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        let _ = free_tx.send(AlignedBuf::new(chunk));
    }
    std::thread::scope(|scope| {
        let plan = &plan;
        let mut reader_hasher = hasher.take();
        scope.spawn(move || {
            for &(off, n, gap) in plan {
                let Ok(mut buf) = free_rx.recv() else { return };
                let r = opts
                    .check_cancel()
                    .and_then(|()| failpoint_copy())
                    .and_then(|()| opts.pay(n as u64))
                    .and_then(|()| read_exact_at(src, buf.get_mut(n), off, "source"));
                // Hashing here overlaps it with the writes of the previous chunk.
                if r.is_ok()
                    && let Some(h) = reader_hasher.as_deref_mut()
                {
                    hash_zeros(h, gap);
                    h.update_rayon(buf.get_mut(n));
                }
                let failed = r.is_err();
                if full_tx.send(r.map(|()| (off, n, gap, buf))).is_err() || failed {
                    return;
                }
            }
        });
        // Owns the channel ends, so an early error return drops them and
        // the reader thread stops instead of blocking the scope's join.
        let mut consume = move || -> Result<u64, CopyError> {
            let mut copied = 0u64;
            for _ in 0..plan.len() {
                let (off, n, gap, mut buf) = match full_rx.recv() {
                    Ok(r) => r?,
                    Err(_) => return Err(CopyError::Cancelled),
                };
                let b = buf.get_mut(n);
                if skip_zeros {
                    write_skipping_zeros(dst, b, off)?;
                } else {
                    dst.write_all_at(b, off)
                        .map_err(|e| CopyError::io(format!("write staging at {off}"), e))?;
                }
                // W8 as we go: read the chunk back from the staging file (page
                // cache) and hash it, overlapping the reader thread's disk I/O.
                if let Some(rh) = readback.as_deref_mut() {
                    hash_zeros(rh, gap);
                    let b = buf.get_mut(n);
                    read_exact_at(dst, b, off, "staging")?;
                    rh.update_rayon(b);
                }
                copied += n as u64;
                progress.add(n as u64);
                let _ = free_tx.send(buf);
            }
            // The trailing hole up to the size is hashed by the caller, which
            // knows the size.
            Ok(copied)
        };
        consume()
    })
}

/// A read-only shared mapping of part of a file, unmapped on drop.
struct Mapping {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

impl Mapping {
    fn new(f: &File, off: u64, len: usize) -> Option<Mapping> {
        // SAFETY: a new read-only mapping of `len` bytes of an open file at a
        // page-aligned offset, unmapped by `Drop`. Making it is safe; reading
        // it from user space is not if the file shrinks (SIGBUS), so that
        // only happens through the unsafe `bytes` (the staging file only).
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::SHARED,
                f,
                off,
            )
        }
        .ok()?;
        // SAFETY: advice on the mapping just made.
        let _ = unsafe { rustix::mm::madvise(ptr, len, rustix::mm::Advice::Sequential) };
        Some(Mapping { ptr, len })
    }

    /// The mapped bytes.
    ///
    /// # Safety
    /// The file must cover the whole mapping while the slice is used:
    /// reading a page past its end raises SIGBUS.
    unsafe fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; nothing refers to it.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr, self.len);
        }
    }
}

/// Copy `len` bytes of `src` at `off` to `dst` at the same offset with
/// sendfile(2): the kernel moves the bytes from the source's page cache to
/// the staging file's, one memory copy, no user-space mapping (a mapped
/// source page that is not yet read makes a write come up short, and the
/// kernel zeroes and retries). The source reaching its end early means it
/// shrank during the copy.
fn sendfile_at(dst: &File, src: &File, off: u64, len: usize) -> Result<(), CopyError> {
    let mut done = 0usize;
    while done < len {
        let pos = off + done as u64;
        rustix::fs::seek(dst, SeekFrom::Start(pos))
            .map_err(|e| CopyError::io(format!("seek staging to {pos}"), e))?;
        let mut o = i64::try_from(pos).map_err(|_| CopyError::io("offset", Errno::FBIG))?;
        // SAFETY: two live descriptors and a valid offset pointer.
        let r = unsafe { libc::sendfile(dst.as_raw_fd(), src.as_raw_fd(), &mut o, len - done) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(CopyError::io(format!("sendfile at {pos}"), e));
        }
        if r == 0 {
            return Err(CopyError::SourceChanged(format!(
                "the source shrank during the copy (at {pos})"
            )));
        }
        done += r.unsigned_abs();
    }
    Ok(())
}

/// One trailing reader of [`copy_sendfile`]: for each chunk `(off, n,
/// gap)` the copy has written, hash `gap` zero bytes and then the chunk as
/// read back from `f` into `hasher` (if any), then drop the chunk from
/// the page cache. On the staging file the drop also starts the chunk's
/// writeback (DONTNEED writes dirty pages back without waiting), so the
/// fsync after the copy has little left; on the source the chunk has been
/// read twice and is not needed again (S10.3/4, early).
fn trail(
    f: &File,
    what: &str,
    chunks: std::sync::mpsc::Receiver<(u64, u64, u64)>,
    mut hasher: Option<&mut blake3::Hasher>,
    stop: &AtomicBool,
) -> Result<(), CopyError> {
    const READ_BYTES: usize = 1 << 20;
    let mut buf = AlignedBuf::new(READ_BYTES);
    for (off, n, gap) in chunks {
        if stop.load(Ordering::Relaxed) {
            return Err(CopyError::Cancelled);
        }
        if let Some(h) = hasher.as_deref_mut() {
            hash_zeros(h, gap);
            read_range(f, &mut buf, READ_BYTES, off, off + n, what, |b| {
                h.update(b);
            })?;
        }
        let _ = rustix::fs::fadvise(f, off, NonZeroU64::new(n), Advice::DontNeed);
    }
    Ok(())
}

/// Copy the data ranges (the whole file from offset 0) with sendfile(2):
/// one memory copy per byte in the kernel, where a read/write loop makes
/// two. A second thread reads every written chunk back from the staging
/// file (page cache) and hashes it into `readback` (W8), holes as zeros;
/// with `rehash`, a third reads the same chunk of the source again and
/// hashes it there (W9's fresh hash, also W8's reference). Both trail the
/// writes by a chunk, so the verification overlaps the copy instead of
/// following it. A source change after a chunk's re-read moves the
/// source's ctime, which W9 compares with the snapshot taken before the
/// copy. Each chunk leaves the page cache once it is verified ([`trail`]),
/// which overlaps the staging file's writeback with the reads
/// (interleaved 1 GiB moves: 1.02 -> 0.89 s and 1.18 -> 0.95 s, cp + sync
/// 0.90 and 0.97 s). Throttle, cancel and the `worker_copy` failpoint are
/// checked per chunk.
fn copy_sendfile(
    src: &File,
    dst: &File,
    ranges: &[(u64, u64)],
    opts: &CopyOptions,
    progress: &mut Progress<'_>,
    readback: Option<&mut blake3::Hasher>,
    rehash: Option<&mut blake3::Hasher>,
) -> Result<u64, CopyError> {
    let chunk = opts.effective_chunk() as u64;
    let stop = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<(u64, u64, u64)>();
    let (stx, srx) = std::sync::mpsc::channel::<(u64, u64, u64)>();
    let stx = rehash.is_some().then_some(stx);
    std::thread::scope(|scope| {
        let stop = &stop;
        let rehasher =
            rehash.map(|h| scope.spawn(move || trail(src, "source", srx, Some(h), stop)));
        let checker = scope.spawn(move || trail(dst, "staging", rx, readback, stop));
        let mut copy = || -> Result<u64, CopyError> {
            let mut copied = 0u64;
            let mut end_of_prev = 0u64;
            for &(start, end) in ranges {
                let mut gap = start.saturating_sub(end_of_prev);
                let mut off = start;
                while off < end {
                    opts.check_cancel()?;
                    failpoint_copy()?;
                    let n = (end - off).min(chunk);
                    opts.pay(n)?;
                    let len = usize::try_from(n).unwrap_or(usize::MAX);
                    sendfile_at(dst, src, off, len)?;
                    if tx.send((off, n, gap)).is_err() {
                        // The checker stopped on an error; join reports it.
                        return Ok(copied);
                    }
                    if let Some(stx) = &stx
                        && stx.send((off, n, gap)).is_err()
                    {
                        return Ok(copied);
                    }
                    gap = 0;
                    copied += n;
                    progress.add(n);
                    off += n;
                }
                end_of_prev = end;
            }
            Ok(copied)
        };
        let copied = copy();
        if copied.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        drop(tx);
        drop(stx);
        let checked = match checker.join() {
            Ok(r) => r,
            Err(_) => Err(CopyError::io("staging read-back thread", Errno::IO)),
        };
        let rehashed = match rehasher.map(|j| j.join()) {
            None => Ok(()),
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(CopyError::io("source re-hash thread", Errno::IO)),
        };
        let copied = copied?;
        checked?;
        rehashed?;
        Ok(copied)
    })
}

/// Outcome of the `copy_file_range` pass.
enum CfrResult {
    /// Everything copied; bytes transferred.
    Done(u64),
    /// The method gave up at this offset after copying this many bytes;
    /// continue with the read/write loop.
    FallBack { at: u64, copied: u64 },
}

fn copy_file_range_ranges(
    src: &File,
    dst: &File,
    ranges: &[(u64, u64)],
    opts: &CopyOptions,
    progress: &mut Progress<'_>,
) -> Result<CfrResult, CopyError> {
    let chunk = opts.effective_chunk();
    let mut copied = 0u64;
    for &(start, end) in ranges {
        let mut off_in = start;
        let mut off_out = start;
        while off_in < end {
            opts.check_cancel()?;
            failpoint_copy()?;
            let n = usize::try_from(end - off_in)
                .unwrap_or(usize::MAX)
                .min(chunk);
            opts.pay(n as u64)?;
            let before = off_in;
            match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), n) {
                Ok(0) => {
                    return Err(CopyError::SourceChanged(format!(
                        "source ended at {before} bytes, expected at least {end}"
                    )));
                }
                Ok(k) => {
                    // The kernel advanced both offsets by k.
                    copied += k as u64;
                    progress.add(k as u64);
                }
                Err(Errno::INTR) => {}
                Err(e) if is_fallback(e) => {
                    tracing::debug!(
                        errno = e.raw_os_error(),
                        at = before,
                        "copy_file_range unavailable; falling back to read/write"
                    );
                    return Ok(CfrResult::FallBack { at: before, copied });
                }
                Err(e) => return Err(CopyError::io(format!("copy_file_range at {before}"), e)),
            }
        }
    }
    Ok(CfrResult::Done(copied))
}

fn fsync_dir_of(path: &Path) -> Result<(), CopyError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let d = File::open(dir).map_err(|e| CopyError::io(format!("open {}", dir.display()), e))?;
    rustix::fs::fsync(&d).map_err(|e| CopyError::io(format!("fsync {}", dir.display()), e))
}

/// Copy the source at `source_path` into `staging`: data (S10.3), then
/// metadata (S10.4), then fsync of the file and its directory (W7).
/// `progress(done, total)` is called at the start, at least every 250 ms
/// while chunks complete, and at the end. A staging file read back during
/// the copy leaves the page cache once it is durable. On error the staging
/// file is left as it is for the caller to remove.
pub fn copy_into(
    source_path: &Path,
    staging: &Staging,
    opts: &CopyOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyReport, CopyError> {
    let started = Instant::now();
    opts.check_cancel()?;
    let src = open_source(source_path)?;
    // Read-ahead as for a sequential stream (cp does the same): the copy
    // reads the source once, front to back.
    let _ = rustix::fs::fadvise(&src, 0, None, Advice::Sequential);
    let src_meta = src
        .metadata()
        .map_err(|e| CopyError::io(format!("stat {}", source_path.display()), e))?;
    if !src_meta.file_type().is_file() {
        return Err(CopyError::io(
            format!("{} is not a regular file", source_path.display()),
            io::Error::from_raw_os_error(libc::EINVAL),
        ));
    }
    let snapshot = SourceSnapshot::of(&src_meta);
    let size = snapshot.size;
    let dst = staging.file();
    let dst_dev = dst
        .metadata()
        .map_err(|e| CopyError::io(format!("stat {}", staging.path().display()), e))?
        .dev();
    let (ranges, sparse_seek) = data_ranges(&src, size)?;
    let mut progress = Progress::new(progress, size);

    let mut method = None;
    let mut copied = 0u64;
    let mut streamed_hash = None;
    let mut readback_hash: Option<blake3::Hash> = None;
    let mut trailed_hash: Option<blake3::Hash> = None;

    if opts.allow_reflink && snapshot.dev == dst_dev && size > 0 {
        opts.check_cancel()?;
        failpoint_copy()?;
        match rustix::fs::ioctl_ficlone(dst, &src) {
            Ok(()) => {
                method = Some(CopyMethod::Reflink);
                copied = size;
                progress.add(size);
            }
            Err(e) if is_fallback(e) => {
                tracing::debug!(errno = e.raw_os_error(), "FICLONE unavailable");
            }
            Err(e) => return Err(CopyError::io("FICLONE", e)),
        }
    }

    if method.is_none() && opts.allow_copy_file_range && sparse_seek {
        // Without sparse_seek the read/write loop must look for zero blocks,
        // which copy_file_range cannot do.
        match copy_file_range_ranges(&src, dst, &ranges, opts, &mut progress)? {
            CfrResult::Done(n) => {
                method = Some(CopyMethod::CopyFileRange);
                copied = n;
            }
            // Refused before the first byte (EXDEV across filesystems):
            // the read/write loop below, which hashes as it goes.
            CfrResult::FallBack { at: 0, copied: 0 } => {}
            CfrResult::FallBack { at, copied: n } => {
                let rest = stream_ranges(
                    &src,
                    dst,
                    &ranges,
                    at,
                    opts,
                    &mut progress,
                    None,
                    true,
                    None,
                )?;
                method = Some(CopyMethod::Stream);
                copied = n + rest;
            }
        }
    }

    let method = match method {
        Some(m) => m,
        None => {
            // The source is hashed while streaming only when no re-hash
            // follows: with one, the re-hash is the source's hash for W8
            // as well (the staging bytes must equal the source's bytes as
            // they are after the copy, which is what W8 and W9 together
            // establish), and a third pass would only cost CPU. The
            // sendfile copy re-reads each chunk of the source right after
            // copying it; the read/write loop re-hashes after the copy.
            let mut rb = blake3::Hasher::new();
            if sparse_seek {
                let mut sh = opts.rehash_source.then(blake3::Hasher::new);
                copied = copy_sendfile(
                    &src,
                    dst,
                    &ranges,
                    opts,
                    &mut progress,
                    (!opts.readback_direct).then_some(&mut rb),
                    sh.as_mut(),
                )?;
                let data_end = ranges.last().map_or(0, |r| r.1);
                if let Some(h) = sh.as_mut() {
                    hash_zeros(h, size - data_end);
                    trailed_hash = Some(h.finalize());
                }
                hash_zeros(&mut rb, size - data_end);
                readback_hash = (!opts.readback_direct).then(|| rb.finalize());
                CopyMethod::Stream
            } else {
                let mut h = (!opts.rehash_source).then(blake3::Hasher::new);
                copied = stream_ranges(
                    &src,
                    dst,
                    &ranges,
                    0,
                    opts,
                    &mut progress,
                    h.as_mut(),
                    true,
                    (!opts.readback_direct).then_some(&mut rb),
                )?;
                let data_end = ranges.last().map_or(0, |r| r.1);
                if let Some(h) = h.as_mut() {
                    hash_zeros(h, size - data_end);
                    streamed_hash = Some(h.finalize());
                }
                hash_zeros(&mut rb, size - data_end);
                readback_hash = (!opts.readback_direct).then(|| rb.finalize());
                CopyMethod::Stream
            }
        }
    };

    rustix::fs::ftruncate(dst, size)
        .map_err(|e| CopyError::io(format!("truncate staging to {size}"), e))?;

    // The hashes still missing are read while metadata is applied and the
    // staging file is made durable (an fsync is mostly waiting): the
    // source's (W8's reference when it was not hashed while streaming, and
    // W9's re-hash) and the staging file's (after a reflink or
    // copy_file_range, S10.2 W8).
    let cancel = opts.cancel.as_deref();
    let need_source = (opts.rehash_source || streamed_hash.is_none()) && trailed_hash.is_none();
    let (source_hash, staging_hash) = std::thread::scope(
        |scope| -> Result<(Option<blake3::Hash>, Option<blake3::Hash>), CopyError> {
            let src_job = need_source
                .then(|| scope.spawn(|| hash_open_file(&src, size, "source", cancel, false)));
            let dst_job = (readback_hash.is_none() && !opts.readback_direct)
                .then(|| scope.spawn(|| hash_open_file(dst, size, "staging", cancel, true)));
            let durable = apply_metadata(&src, &src_meta, staging)
                .and_then(|()| {
                    rustix::fs::fsync(dst).map_err(|e| {
                        CopyError::io(format!("fsync {}", staging.path().display()), e)
                    })
                })
                .and_then(|()| fsync_dir_of(staging.path()));
            // A staging file already read back (the stream copy) is clean
            // now and nothing reads its data again: it leaves the page
            // cache (S10.3/4) while the source is still being hashed,
            // instead of after W9 on the move's critical path.
            if durable.is_ok() && dst_job.is_none() {
                drop_cache_fd(dst);
            }
            type Job<'s> = std::thread::ScopedJoinHandle<'s, Result<blake3::Hash, CopyError>>;
            let join = |j: Option<Job<'_>>, what: &str| match j {
                Some(j) => match j.join() {
                    Ok(r) => r.map(Some),
                    Err(_) => Err(CopyError::io(format!("{what} hash thread"), Errno::IO)),
                },
                None => Ok(None),
            };
            let s = join(src_job, "source");
            let d = join(dst_job, "staging");
            durable?;
            Ok((s?, d?))
        },
    )?;
    let source_hash = source_hash.or(trailed_hash);
    let Some(blake3) = streamed_hash.or(source_hash) else {
        return Err(CopyError::io("source hash", Errno::IO));
    };
    let rehash = if opts.rehash_source {
        source_hash.map(|h| h.to_hex().to_string())
    } else {
        None
    };
    let mut readback_direct = false;
    let readback_hash = match readback_hash.or(staging_hash) {
        Some(h) => Some(h),
        None if opts.readback_direct => match hash_direct(staging.path(), size, cancel)? {
            Some(h) => {
                readback_direct = true;
                Some(h)
            }
            None => {
                tracing::warn!(staging = %staging.path().display(),
                    "verify_readback=direct: the filesystem refuses O_DIRECT; \
                     reading the staging file back through the page cache");
                Some(hash_open_file(dst, size, "staging", cancel, true)?)
            }
        },
        None => None,
    };
    progress.finish();

    Ok(CopyReport {
        bytes_total: size,
        bytes_copied: copied,
        method,
        blake3: blake3.to_hex().to_string(),
        duration: started.elapsed(),
        source: snapshot,
        sparse_seek,
        staging_blake3: readback_hash.map(|h| h.to_hex().to_string()),
        source_rehash: rehash,
        readback_direct,
    })
}

// ---------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------

/// Every xattr of `f`, in every namespace the caller can read.
fn xattrs_of(f: &File, what: &str) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, CopyError> {
    let io = |op: &str, e: Errno| CopyError::io(format!("{op} {what}"), e);
    let mut names = Vec::new();
    loop {
        let need = match rustix::fs::flistxattr_query(f) {
            Ok(n) => n,
            Err(Errno::OPNOTSUPP) => return Ok(BTreeMap::new()),
            Err(e) => return Err(io("listxattr", e)),
        };
        names.resize(need, 0);
        match rustix::fs::flistxattr(f, &mut names[..]) {
            Ok(n) => {
                names.truncate(n);
                break;
            }
            // Grew between the two calls.
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(io("listxattr", e)),
        }
    }
    let mut out = BTreeMap::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = match std::ffi::CString::new(name) {
            Ok(c) => c,
            Err(_) => continue,
        };
        let mut value = Vec::new();
        let value = loop {
            let need = match rustix::fs::fgetxattr_query(f, cname.as_c_str()) {
                Ok(n) => n,
                Err(e) => {
                    return Err(io(
                        &format!("getxattr {}", String::from_utf8_lossy(name)),
                        e,
                    ));
                }
            };
            value.resize(need, 0);
            match rustix::fs::fgetxattr(f, cname.as_c_str(), &mut value[..]) {
                Ok(n) => {
                    value.truncate(n);
                    break value;
                }
                Err(Errno::RANGE) => continue,
                Err(e) => {
                    return Err(io(
                        &format!("getxattr {}", String::from_utf8_lossy(name)),
                        e,
                    ));
                }
            }
        };
        out.insert(name.to_vec(), value);
    }
    Ok(out)
}

/// Apply the source's metadata to the staging file, in the order that
/// keeps every item (S10.4):
/// 1. owner — first, because chown clears setuid/setgid and
///    `security.capability`;
/// 2. every xattr (ACLs, `trusted.smoothfs.oid`/`gen`, capabilities), and
///    any xattr the staging file got on its own and the source lacks is
///    removed;
/// 3. the full mode including setuid/setgid/sticky — after chown and after
///    the ACL xattr, which both rewrite mode bits;
/// 4. the `nodump` and `noatime` file flags, best effort;
/// 5. atime and mtime to the nanosecond, last.
fn apply_metadata(
    src: &File,
    src_meta: &std::fs::Metadata,
    staging: &Staging,
) -> Result<(), CopyError> {
    let dst = staging.file();
    let what = staging.path().display().to_string();
    rustix::fs::fchown(
        dst,
        Some(rustix::fs::Uid::from_raw(src_meta.uid())),
        Some(rustix::fs::Gid::from_raw(src_meta.gid())),
    )
    .map_err(|e| {
        CopyError::io(
            format!("chown {what} to {}:{}", src_meta.uid(), src_meta.gid()),
            e,
        )
    })?;

    let src_x = xattrs_of(src, "source")?;
    for (name, value) in &src_x {
        let cname = std::ffi::CString::new(name.as_slice())
            .map_err(|e| CopyError::io("xattr name", io::Error::other(e)))?;
        rustix::fs::fsetxattr(dst, cname.as_c_str(), value, XattrFlags::empty()).map_err(|e| {
            CopyError::io(
                format!("setxattr {} on {what}", String::from_utf8_lossy(name)),
                e,
            )
        })?;
    }
    // An LSM or default ACL may have labelled the new file; the copy must
    // carry exactly the source's set.
    for name in xattrs_of(dst, "staging")?.keys() {
        if !src_x.contains_key(name)
            && let Ok(cname) = std::ffi::CString::new(name.as_slice())
            && let Err(e) = rustix::fs::fremovexattr(dst, cname.as_c_str())
        {
            tracing::debug!(
                xattr = %String::from_utf8_lossy(name),
                errno = e.raw_os_error(),
                "cannot remove an xattr the source lacks"
            );
        }
    }

    let mode = src_meta.mode() & 0o7777;
    rustix::fs::fchmod(dst, rustix::fs::Mode::from_raw_mode(mode))
        .map_err(|e| CopyError::io(format!("chmod {what} to {mode:o}"), e))?;

    copy_flags(src, dst);

    let times = Timestamps {
        last_access: Timespec {
            tv_sec: src_meta.atime(),
            tv_nsec: src_meta.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: src_meta.mtime(),
            tv_nsec: src_meta.mtime_nsec(),
        },
    };
    rustix::fs::futimens(dst, &times).map_err(|e| CopyError::io(format!("utimens {what}"), e))
}

/// Carry `nodump` and `noatime` (S10.4/1); a destination without inode
/// flags simply does not get them.
fn copy_flags(src: &File, dst: &File) {
    let wanted = match rustix::fs::ioctl_getflags(src) {
        Ok(f) => f & (IFlags::NODUMP | IFlags::NOATIME),
        Err(_) => return,
    };
    if wanted.is_empty() {
        return;
    }
    let current = rustix::fs::ioctl_getflags(dst).unwrap_or(IFlags::empty());
    if let Err(e) = rustix::fs::ioctl_setflags(dst, current | wanted) {
        tracing::debug!(
            errno = e.raw_os_error(),
            "destination does not take nodump/noatime"
        );
    }
}

/// Whether the source lower carries the `immutable` or `append-only` flag
/// (S10.2 W2 refuses those). Unknown (no inode flags) counts as no.
pub fn has_immutable_or_append(path: &Path) -> bool {
    match open_source(path) {
        Ok(f) => rustix::fs::ioctl_getflags(&f)
            .is_ok_and(|fl| fl.intersects(IFlags::IMMUTABLE | IFlags::APPEND)),
        Err(_) => false,
    }
}

/// The xattr names of `path` (for the W2 capability check).
pub fn xattr_names(path: &Path) -> Result<Vec<String>, CopyError> {
    let f = open_source(path)?;
    Ok(xattrs_of(&f, &path.display().to_string())?
        .into_keys()
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .collect())
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

/// W8: the staging file's BLAKE3 equals the copy's source hash, and its
/// xattr names and values, mode, uid, gid and mtime equal the source's as
/// they are now.
pub fn verify_staging(
    source_path: &Path,
    staging_path: &Path,
    report: &CopyReport,
    cancel: Option<&AtomicBool>,
) -> Result<(), CopyError> {
    let dst = open_source(staging_path)?;
    let dst_meta = dst
        .metadata()
        .map_err(|e| CopyError::io(format!("stat {}", staging_path.display()), e))?;
    let staging_hash = match &report.staging_blake3 {
        Some(h) => h.clone(),
        None => hash_open_file(&dst, dst_meta.size(), "staging", cancel, true)?
            .to_hex()
            .to_string(),
    };
    if staging_hash != report.blake3 || dst_meta.size() != report.bytes_total {
        return Err(CopyError::ChecksumMismatch {
            source_blake3: report.blake3.clone(),
            staging_blake3: staging_hash,
        });
    }
    let src = open_source(source_path)?;
    let src_meta = src
        .metadata()
        .map_err(|e| CopyError::io(format!("stat {}", source_path.display()), e))?;
    let mut diffs = Vec::new();
    if src_meta.mode() & 0o7777 != dst_meta.mode() & 0o7777 {
        diffs.push(format!(
            "mode {:o} != {:o}",
            src_meta.mode() & 0o7777,
            dst_meta.mode() & 0o7777
        ));
    }
    if src_meta.uid() != dst_meta.uid() || src_meta.gid() != dst_meta.gid() {
        diffs.push(format!(
            "owner {}:{} != {}:{}",
            src_meta.uid(),
            src_meta.gid(),
            dst_meta.uid(),
            dst_meta.gid()
        ));
    }
    if (src_meta.mtime(), src_meta.mtime_nsec()) != (dst_meta.mtime(), dst_meta.mtime_nsec()) {
        diffs.push(format!(
            "mtime {}.{:09} != {}.{:09}",
            src_meta.mtime(),
            src_meta.mtime_nsec(),
            dst_meta.mtime(),
            dst_meta.mtime_nsec()
        ));
    }
    let sx = xattrs_of(&src, "source")?;
    let dx = xattrs_of(&dst, "staging")?;
    for (name, value) in &sx {
        match dx.get(name) {
            None => diffs.push(format!("xattr {} missing", String::from_utf8_lossy(name))),
            Some(v) if v != value => {
                diffs.push(format!("xattr {} differs", String::from_utf8_lossy(name)))
            }
            Some(_) => {}
        }
    }
    for name in dx.keys().filter(|n| !sx.contains_key(*n)) {
        diffs.push(format!("xattr {} extra", String::from_utf8_lossy(name)));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(CopyError::MetadataMismatch(diffs.join(", ")))
    }
}

/// Create `staging_path`, copy `source_path` into it, verify it and drop
/// both files from the page cache: the whole of W7 + W8 for callers that
/// need no step in between (tests, tools). The staging file is left in
/// place on error.
pub fn copy_file(
    source_path: &Path,
    staging_path: &Path,
    opts: &CopyOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyReport, CopyError> {
    let staging = Staging::create(staging_path)?;
    let report = copy_into(source_path, &staging, opts, progress)?;
    verify_staging(source_path, staging_path, &report, opts.cancel.as_deref())?;
    drop_cache_fd(staging.file());
    drop_cache(source_path);
    Ok(report)
}
