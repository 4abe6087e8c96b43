//! The thin `fuser` adapter: translates FUSE requests into [`Namespace`]
//! calls and owns what only exists because of FUSE — file handles and the
//! passthrough backing ids.
//!
//! Passthrough invariant (DESIGN §4): an inode has at most one `BackingId`,
//! shared by every passthrough open of it (`Weak` per inode, `Arc` per
//! handle, dropped at the last release); the backing file is opened O_RDWR
//! so one registration can serve readers and writers. The kernel refuses
//! to mix passthrough and cached opens of one inode, so an inode with
//! mediated opens gets mediated opens until they are all released.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};
use parking_lot::{Mutex, RwLock};
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::live::LiveObj;
use crate::namespace::{self, Entry, FileAttrIoctl, KIND_DIR, KIND_FILE, KIND_SYMLINK, Namespace};
use crate::options::PassthroughMode;
use crate::sys;

/// An open regular file.
struct Handle {
    ino: u64,
    /// The lower descriptor; a mediated handle swaps it after a cutover (S11.5).
    fd: Mutex<Arc<OwnedFd>>,
    /// The cutover generation `fd` belongs to.
    gen_: AtomicU32,
    live: Arc<LiveObj>,
    /// Open flags without O_CREAT, O_EXCL, O_NOCTTY and O_TRUNC (S11.5 item 1).
    flags: i32,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    /// Set for passthrough handles: keeps the inode's backing id alive.
    backing: Option<Arc<BackingId>>,
    /// The handle that created a spilled file reports SPILL at release.
    created: bool,
    /// Passthrough I/O never reaches us: estimated at release (S6.2).
    heat_ticket: Mutex<Option<crate::heat::PassthroughTicket>>,
    /// Opened by the daemon itself (lease break): no heat (S8.5).
    internal: bool,
}

/// An open directory: the merged listing snapshot taken at offset 0 (S2.3).
struct DirHandle {
    entries: Mutex<Vec<namespace::DirEntry>>,
}

/// The passthrough backing id of an inode, shared by its passthrough handles.
#[derive(Default)]
struct InodeIo {
    backing: Option<Weak<BackingId>>,
}

pub struct SmoothFs {
    pub ns: Arc<Namespace>,
    mode: PassthroughMode,
    passthrough_negotiated: bool,
    /// FUSE_HANDLE_KILLPRIV_V2 is on: the kernel no longer asks for
    /// `security.capability` before every write, and clearing set-id bits
    /// on write, truncate and chown by unprivileged callers is ours.
    killpriv_v2: bool,
    entry_ttl: Duration,
    attr_ttl: Duration,
    next_fh: AtomicU64,
    /// This daemon's pid: opens it makes itself are internal (no heat).
    own_pid: u32,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    dirs: RwLock<HashMap<u64, Arc<DirHandle>>>,
    io: Mutex<HashMap<u64, InodeIo>>,
    /// Process names whose opens are always mediated (S13.1, `mediated_comm`).
    pub mediated_comm: Vec<String>,
    /// Called with each spill record when it is ready to be reported.
    pub on_spill: Option<Box<dyn Fn(namespace::SpillRecord) + Send + Sync>>,
}

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno)
}

fn ts(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

pub fn to_attr(st: &libc::stat) -> FileAttr {
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    };
    FileAttr {
        ino: INodeNo(st.st_ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: ts(st.st_atime, st.st_atime_nsec),
        mtime: ts(st.st_mtime, st.st_mtime_nsec),
        ctime: ts(st.st_ctime, st.st_ctime_nsec),
        crtime: ts(st.st_ctime, st.st_ctime_nsec),
        kind,
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

fn file_type(kind: u8, mode_hint: Option<u32>) -> FileType {
    match kind {
        KIND_DIR => FileType::Directory,
        KIND_SYMLINK => FileType::Symlink,
        KIND_FILE => FileType::RegularFile,
        _ => match mode_hint.map(|m| m & libc::S_IFMT) {
            Some(libc::S_IFCHR) => FileType::CharDevice,
            Some(libc::S_IFBLK) => FileType::BlockDevice,
            Some(libc::S_IFIFO) => FileType::NamedPipe,
            Some(libc::S_IFSOCK) => FileType::Socket,
            _ => FileType::RegularFile,
        },
    }
}

fn to_timespec(t: TimeOrNow) -> Option<libc::timespec> {
    match t {
        TimeOrNow::Now => None,
        TimeOrNow::SpecificTime(st) => Some(match st.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as i64,
            },
            Err(e) => {
                let d = e.duration();
                let mut sec = -(d.as_secs() as i64);
                let mut nsec = -(d.subsec_nanos() as i64);
                if nsec < 0 {
                    sec -= 1;
                    nsec += 1_000_000_000;
                }
                libc::timespec {
                    tv_sec: sec,
                    tv_nsec: nsec,
                }
            }
        }),
    }
}

impl SmoothFs {
    pub fn new(
        ns: Arc<Namespace>,
        mode: PassthroughMode,
        entry_ttl: Duration,
        attr_ttl: Duration,
    ) -> SmoothFs {
        SmoothFs {
            ns,
            mode,
            passthrough_negotiated: false,
            killpriv_v2: false,
            entry_ttl,
            attr_ttl,
            next_fh: AtomicU64::new(1),
            own_pid: std::process::id(),
            handles: RwLock::new(HashMap::new()),
            dirs: RwLock::new(HashMap::new()),
            io: Mutex::new(HashMap::new()),
            mediated_comm: Vec::new(),
            on_spill: None,
        }
    }

    fn reply_entry(&self, reply: ReplyEntry, e: &Entry) {
        reply.entry_with_ttls(
            &self.entry_ttl,
            &self.attr_ttl,
            &to_attr(&e.attr),
            Generation(e.generation as u64),
        );
    }

    /// Reply to mkdir/mknod/symlink. Objects other than regular files have
    /// no creating handle, so a spill is reported at create with size 0 (S5.2).
    fn reply_new_object(&self, reply: ReplyEntry, r: Result<Entry, Error>) {
        match r {
            Ok(e) => {
                if let Some(s) = self.ns.spill_released(e.ino, 0)
                    && let Some(cb) = &self.on_spill
                {
                    cb(s);
                }
                self.reply_entry(reply, &e)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// [`meta_live`](Self::meta_live) for an xattr change, unless `name`
    /// is one of smoothfs's own (the protocol pins are not lower xattrs).
    fn lower_xattr_live(&self, ino: u64, name: &OsStr) -> Option<Arc<LiveObj>> {
        if name
            .as_encoded_bytes()
            .starts_with(crate::oid::XATTR_RESERVED_PREFIX.as_bytes())
        {
            return None;
        }
        self.meta_live(ino)
    }

    /// The live object of a regular file for a metadata change: the caller
    /// holds its drain lock shared while it changes the lower, so the
    /// change lands on the lower that is current when it runs (a cutover
    /// waits for it), and calls [`LiveObj::meta_changed`] after it.
    /// Directories, symlinks and special files never move: None.
    fn meta_live(&self, ino: u64) -> Option<Arc<LiveObj>> {
        let n = self.ns.node(ino).ok()?;
        (n.kind == KIND_FILE).then(|| self.ns.live.get_or_create(ino, n.oid))
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        self.handles.read().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    /// Decide the I/O mode of a new open and register it (S13.1). Returns
    /// the backing id to hand the kernel for a passthrough open.
    fn open_mode(
        &self,
        live: &LiveObj,
        fd: &OwnedFd,
        rank: u8,
        pid: u32,
        writable: bool,
        open_backing: &dyn Fn(&OwnedFd) -> std::io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        let ino = live.ino;
        let tier_ok = self
            .ns
            .tiers
            .get(rank as usize)
            .map(|t| t.passthrough.load(Ordering::Relaxed))
            .unwrap_or(false);
        // S5.4: writers on a nearly full tier are mediated, so the daemon
        // sees their ENOSPC and can relocate the file.
        let write_off = writable
            && self.ns.tiers.get(rank as usize).is_some_and(|t| {
                let pct = self
                    .ns
                    .moves
                    .passthrough_write_off_pct
                    .load(Ordering::Relaxed);
                t.near_full(pct as u32).unwrap_or(false)
            });
        let rules_say_mediated = write_off
            || self.ns.must_mediate(live)
            || (!self.mediated_comm.is_empty()
                && sys::proc_comm(pid).is_some_and(|c| self.mediated_comm.contains(&c)));
        // mv then io: a plan checks the passthrough count under the same
        // locks, so no passthrough open slips past MOVE_PLAN gate 14.
        let mv = live.mv.lock();
        let mut counts = live.io.lock();
        let mut table = self.io.lock();
        let st = table.entry(ino).or_default();
        // Item 4: while passthrough handles are open, new opens join them.
        if counts.passthrough > 0
            && let Some(id) = st.backing.as_ref().and_then(Weak::upgrade)
        {
            counts.passthrough += 1;
            return Some(id);
        }
        let want = self.passthrough_negotiated
            && self.mode != PassthroughMode::Off
            && tier_ok
            && counts.mediated == 0
            && mv.state == crate::placement::state::PLACED
            && !rules_say_mediated;
        drop(mv);
        if want {
            match open_backing(fd) {
                Ok(id) => {
                    let id = Arc::new(id);
                    st.backing = Some(Arc::downgrade(&id));
                    counts.passthrough += 1;
                    return Some(id);
                }
                Err(e) => {
                    warn!(
                        "passthrough unavailable for inode {ino:#x} on tier {rank}: {e}; using mediated I/O"
                    );
                    if let Some(t) = self.ns.tiers.get(rank as usize) {
                        t.passthrough.store(false, Ordering::Relaxed);
                    }
                }
            }
        }
        counts.mediated += 1;
        None
    }

    fn release_mode(&self, live: &LiveObj, passthrough: bool) {
        {
            let mut counts = live.io.lock();
            if passthrough {
                counts.passthrough = counts.passthrough.saturating_sub(1);
            } else {
                counts.mediated = counts.mediated.saturating_sub(1);
            }
            if counts.passthrough == 0 {
                self.io.lock().remove(&live.ino);
            }
        }
    }

    /// The handle's lower descriptor, reissued to the object's current
    /// lower after a cutover, as the opener (S11.5). Passthrough handles
    /// never outlive a cutover (gate 8), so they never reissue.
    fn fd_of(&self, h: &Handle) -> Result<Arc<OwnedFd>, Errno> {
        // S23.2: I/O on an object whose tier is faulted or down fails.
        if self.ns.tiers.iter().any(|t| !t.is_ok())
            && let Ok(n) = self.ns.node(h.ino)
            && let Some(r) = n.rank
            && let Err(e) = self.ns.check_tier_ok(r)
        {
            return Err(errno(&e));
        }
        let now = h.live.cutover_gen.load(Ordering::Acquire);
        let mut fd = h.fd.lock();
        if h.backing.is_some() || h.gen_.load(Ordering::Acquire) == now {
            return Ok(Arc::clone(&fd));
        }
        let flags = h.flags
            & !(libc::O_ACCMODE
                | libc::O_DIRECT
                | libc::O_CREAT
                | libc::O_EXCL
                | libc::O_NOCTTY
                | libc::O_TRUNC);
        let flags = flags | (h.flags & libc::O_ACCMODE);
        let opened = sys::with_creds(h.uid, h.gid, &h.groups, || self.ns.open_lower(h.ino, flags));
        match opened {
            Ok(Ok((new, _rank))) => {
                *fd = Arc::new(new);
                h.gen_.store(now, Ordering::Release);
                self.ns.moves.reissues_total.fetch_add(1, Ordering::Relaxed);
                Ok(Arc::clone(&fd))
            }
            Ok(Err(e)) => {
                self.ns
                    .moves
                    .reissue_failures_total
                    .fetch_add(1, Ordering::Relaxed);
                debug!("reissue of inode {:#x} failed: {e}", h.ino);
                Err(errno(&e))
            }
            Err(e) => {
                self.ns
                    .moves
                    .reissue_failures_total
                    .fetch_add(1, Ordering::Relaxed);
                Err(Errno::from(e))
            }
        }
    }

    /// Feed a lower I/O error into the tier fault detector (S23.1).
    fn note_io_error(&self, h: &Handle, e: &std::io::Error) {
        if let Some(errno) = e.raw_os_error()
            && let Ok(n) = self.ns.node(h.ino)
            && let Some(r) = n.rank
        {
            self.ns.note_io_error(r, errno);
        }
    }

    /// `passthrough_opens_total` / `mediated_opens_total` (S13.1 item 6).
    fn count_open(&self, passthrough: bool) {
        let c = &self.ns.counters;
        let n = if passthrough {
            &c.passthrough_opens_total
        } else {
            &c.mediated_opens_total
        };
        n.fetch_add(1, Ordering::Relaxed);
    }

    /// The open directory `fh`, its merged listing taken afresh at offset 0
    /// (S2.3: later offsets page through the same snapshot).
    fn dir_snapshot(
        &self,
        fh: FileHandle,
        ino: INodeNo,
        offset: u64,
    ) -> Result<Arc<DirHandle>, Errno> {
        let d = self.dirs.read().get(&fh.0).cloned().ok_or(Errno::EBADF)?;
        if offset == 0 {
            *d.entries.lock() = self.ns.list_dir(ino.0).map_err(|e| errno(&e))?;
        }
        Ok(d)
    }

    /// S5.4: a write on a mediated handle got ENOSPC/EDQUOT. Relocate the
    /// file to the next tier with room (slower ones first) and report the
    /// spill; ENOSPC when no tier has room.
    fn relocate_full(&self, h: &Handle) -> Result<(), Error> {
        let oid = h.live.oid;
        let node = self.ns.node(h.ino)?;
        let cur = node.rank.unwrap_or(0);
        let n = self.ns.tiers.len() as u8;
        let order: Vec<u8> = (cur + 1..n).chain(0..cur).collect();
        match self
            .ns
            .relocate(&oid, &order, "spill: tier full while writing")
        {
            Ok(dest) => {
                self.ns
                    .moves
                    .spill_writes_total
                    .fetch_add(1, Ordering::Relaxed);
                self.ns
                    .counters
                    .any_spill_since_mount
                    .store(1, Ordering::Relaxed);
                let size = self
                    .fd_of(h)
                    .ok()
                    .and_then(|fd| sys::fstat(fd.as_fd()).ok())
                    .map_or(0, |st| st.st_size as u64);
                if let Some(cb) = &self.on_spill {
                    cb(namespace::SpillRecord {
                        oid,
                        first_rank: cur,
                        used_rank: dest,
                        size,
                        rel_path: node.rel_path.to_string_lossy().into_owned(),
                    });
                }
                Ok(())
            }
            Err(e) => {
                if e.errno == libc::ENOSPC {
                    self.ns
                        .moves
                        .spill_writes_failed_all_tiers
                        .fetch_add(1, Ordering::Relaxed);
                }
                warn!("write spill of {oid} failed: {e}");
                Err(if e.errno == libc::EBUSY {
                    Error::new(libc::ENOSPC, e.msg)
                } else {
                    e
                })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new_handle(
        &self,
        req: &Request,
        live: Arc<LiveObj>,
        fd: OwnedFd,
        flags: i32,
        backing: Option<Arc<BackingId>>,
        created: Option<&libc::stat>,
    ) -> (u64, Arc<Handle>) {
        let fh = self.new_fh();
        let groups = if req.uid() == 0 {
            Vec::new()
        } else {
            sys::proc_groups(req.pid())
        };
        let internal = req.pid() == self.own_pid;
        let oid = live.oid;
        let fd = Arc::new(fd);
        let heat_ticket = match &backing {
            Some(_) if !internal => {
                let acc = flags & libc::O_ACCMODE;
                match self.ns.heat.track_passthrough(
                    oid,
                    &fd,
                    acc != libc::O_WRONLY,
                    acc != libc::O_RDONLY,
                    // A create already has the new file's attributes.
                    created.map(crate::heat::FileStamp::from_stat),
                ) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        debug!("heat tracking of a passthrough handle: {e}");
                        None
                    }
                }
            }
            _ => None,
        };
        if !internal {
            self.ns.heat.open(oid);
        }
        let h = Arc::new(Handle {
            heat_ticket: Mutex::new(heat_ticket),
            internal,
            ino: live.ino,
            fd: Mutex::new(fd),
            gen_: AtomicU32::new(live.cutover_gen.load(Ordering::Acquire)),
            live,
            flags: flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC),
            uid: req.uid(),
            gid: req.gid(),
            groups,
            backing,
            created: created.is_some(),
        });
        self.handles.write().insert(fh, Arc::clone(&h));
        (fh, h)
    }

    /// The lower descriptor for a new handle: O_RDWR when possible so a
    /// shared passthrough backing can serve every access mode.
    fn open_for_handle(&self, ino: u64, flags: i32) -> Result<(OwnedFd, u8), Error> {
        let base = flags
            & !(libc::O_ACCMODE | libc::O_DIRECT | libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY);
        match self.ns.open_lower(ino, base | libc::O_RDWR) {
            Ok(v) => Ok(v),
            Err(e)
                if matches!(
                    e.errno,
                    libc::EROFS | libc::ETXTBSY | libc::EACCES | libc::EPERM
                ) =>
            {
                self.ns.open_lower(ino, base | (flags & libc::O_ACCMODE))
            }
            Err(e) => Err(e),
        }
    }

    /// With FUSE_HANDLE_KILLPRIV_V2, clear the set-id bits of the lower file
    /// `fd` the way the kernel does for a caller without CAP_FSETID (taken
    /// to be any caller but root). Returns the new mode when it changed.
    fn kill_privs(&self, fd: BorrowedFd<'_>) -> Result<Option<u32>, Errno> {
        if !self.killpriv_v2 {
            return Ok(None);
        }
        sys::kill_suidgid(fd).map_err(Errno::from)
    }

    /// Mediated O_DIRECT opens bypass the page cache (S13.4 item 2); a
    /// passthrough open needs nothing: the kernel does direct I/O on the
    /// backing file itself.
    ///
    /// Every open is FOPEN_NOFLUSH: close(2) sends no FLUSH round trip.
    /// The daemon has nothing to do at flush time: POSIX locks are the
    /// kernel's own (no SETLK support), mediated writes reach the lower
    /// file before they are acknowledged, and lower descriptors are closed
    /// at RELEASE (docs/semantics.md "close").
    fn fopen_flags(flags: i32, passthrough: bool) -> FopenFlags {
        if flags & libc::O_DIRECT != 0 && !passthrough {
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH
        } else {
            FopenFlags::FOPEN_NOFLUSH
        }
    }
}

impl Filesystem for SmoothFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_EXPORT_SUPPORT
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_DONT_MASK
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_ASYNC_DIO;
        for f in wanted.iter() {
            if config.add_capabilities(f).is_err() {
                debug!("kernel does not offer {f:?}");
            }
        }
        if self.mode != PassthroughMode::Off {
            match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
                Ok(()) => {
                    let _ = config.set_max_stack_depth(1);
                    self.passthrough_negotiated = true;
                }
                Err(_) if self.mode == PassthroughMode::On => {
                    return Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP));
                }
                Err(_) => info!("kernel does not offer FUSE passthrough; every handle is mediated"),
            }
        }
        // Without it the kernel sends GETXATTR security.capability before
        // every write (FUSE clears SB_NOSEC): one extra round trip per
        // write, passthrough writes included. With it, the daemon clears
        // set-id bits itself (see `kill_privs`); capabilities go with the
        // lower write or truncate, which drops them on its own.
        self.killpriv_v2 = config
            .add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
            .is_ok();
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn destroy(&mut self) {
        info!("FUSE session destroyed (unmount)");
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.ns.lookup(parent.0, name) {
            Ok(e) => self.reply_entry(reply, &e),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.ns.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        if let Some(fh) = fh
            && let Ok(h) = self.handle(fh)
            && let Ok(fd) = self.fd_of(&h)
            && let Ok(mut st) = sys::fstat(fd.as_fd())
        {
            st.st_ino = ino.0;
            return reply.attr(&self.attr_ttl, &to_attr(&st));
        }
        match self.ns.getattr(ino.0) {
            Ok(st) => reply.attr(&self.attr_ttl, &to_attr(&st)),
            Err(e) => {
                // An unlinked file that is still open lives on through its handles.
                let open = self
                    .handles
                    .read()
                    .values()
                    .find(|h| h.ino == ino.0)
                    .cloned();
                if let Some(h) = open
                    && let Ok(mut st) = sys::fstat(h.fd.lock().as_fd())
                {
                    st.st_ino = ino.0;
                    return reply.attr(&self.attr_ttl, &to_attr(&st));
                }
                reply.error(errno(&e))
            }
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let h = fh.and_then(|f| self.handle(f).ok());
        // A size change is data-changing: it drains with the cutover
        // (S11.3). Mode, owner and times drain too, and a move planned
        // before them does not cut over (LiveObj::meta_changed).
        let live = match &h {
            Some(h) => Some(Arc::clone(&h.live)),
            None if size.is_some() => match self.ns.node(ino.0) {
                Ok(n) => Some(self.ns.live.get_or_create(ino.0, n.oid)),
                Err(e) => return reply.error(errno(&e)),
            },
            None => self.meta_live(ino.0),
        };
        let _drain = live.as_ref().map(|l| l.drain.read());
        let meta =
            mode.is_some() || uid.is_some() || gid.is_some() || atime.is_some() || mtime.is_some();
        let fd = match &h {
            Some(h) => match self.fd_of(h) {
                Ok(fd) => Some(fd),
                Err(e) => return reply.error(e),
            },
            None => None,
        };
        let r = self.ns.setattr(
            ino.0,
            mode,
            uid,
            gid,
            size,
            atime.map(to_timespec),
            mtime.map(to_timespec),
            fd.as_ref().map(|f| f.as_fd()),
        );
        match r {
            Ok(mut st) => {
                if let Some(l) = &live {
                    if size.is_some() {
                        l.wrote();
                    }
                    if meta {
                        l.meta_changed();
                    }
                }
                // Truncate, chown and chgrp by an unprivileged caller clear
                // set-id bits (KILLPRIV_V2 leaves it to us; an explicit new
                // mode in the same request wins).
                let setid = libc::S_ISUID | libc::S_ISGID;
                if req.uid() != 0
                    && mode.is_none()
                    && (size.is_some() || uid.is_some() || gid.is_some())
                    && st.st_mode & libc::S_IFMT == libc::S_IFREG
                    && st.st_mode & setid != 0
                {
                    let killed = match &fd {
                        Some(f) => self.kill_privs(f.as_fd()),
                        None => match self.ns.open_lower(ino.0, libc::O_RDONLY) {
                            Ok((f, _)) => self.kill_privs(f.as_fd()),
                            Err(e) => Err(errno(&e)),
                        },
                    };
                    match killed {
                        Ok(Some(m)) => st.st_mode = m,
                        Ok(None) => {}
                        Err(e) => return reply.error(e),
                    }
                }
                reply.attr(&self.attr_ttl, &to_attr(&st))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.ns.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self
            .ns
            .mknod(parent.0, name, mode, umask, rdev, req.uid(), req.gid());
        self.reply_new_object(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.ns.mkdir(
            parent.0,
            name,
            mode | libc::S_IFDIR,
            umask,
            req.uid(),
            req.gid(),
        );
        self.reply_new_object(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.ns.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.ns.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self
            .ns
            .symlink(parent.0, link_name, target, req.uid(), req.gid());
        self.reply_new_object(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self
            .ns
            .rename(parent.0, name, newparent.0, newname, flags.bits())
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.ns.link(ino.0, newparent.0, newname) {
            Ok(e) => self.reply_entry(reply, &e),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let flags = flags.0;
        let node = match self.ns.node(ino.0) {
            Ok(n) => n,
            Err(e) => return reply.error(errno(&e)),
        };
        let live = self.ns.live.get_or_create(ino.0, node.oid);
        // O_TRUNC truncates the lower as it opens: data-changing, so it
        // drains with the cutover and counts in write_seq (S11.3), or a
        // move would switch to a copy made before the truncation.
        let trunc = flags & libc::O_TRUNC != 0 && node.kind == KIND_FILE;
        let drain = trunc.then(|| live.drain.read());
        let (fd, rank) = match self.open_for_handle(ino.0, flags) {
            Ok(v) => v,
            Err(e) => return reply.error(errno(&e)),
        };
        if trunc {
            live.wrote();
        }
        drop(drain);
        if flags & libc::O_DIRECT != 0 && self.ns.tiers[rank as usize].caps & (1 << 7) == 0 {
            return reply.error(Errno::EINVAL);
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let backing = self.open_mode(&live, &fd, rank, req.pid(), writable, &|f| {
            reply.open_backing(f.as_fd())
        });
        // An unprivileged O_TRUNC clears set-id bits (the kernel leaves it
        // to us under KILLPRIV_V2), and so does an unprivileged writable
        // passthrough open: its writes never reach the daemon.
        if req.uid() != 0
            && (flags & libc::O_TRUNC != 0 || (writable && backing.is_some()))
            && let Err(e) = self.kill_privs(fd.as_fd())
        {
            return reply.error(e);
        }
        let fopen = Self::fopen_flags(flags, backing.is_some());
        let (fh, h) = self.new_handle(req, live, fd, flags, backing, None);
        match &h.backing {
            Some(id) => {
                self.count_open(true);
                reply.opened_passthrough(FileHandle(fh), fopen, id)
            }
            None => {
                self.count_open(false);
                reply.opened(FileHandle(fh), fopen)
            }
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (e, fd) = match self
            .ns
            .create(parent.0, name, mode, umask, flags, req.uid(), req.gid())
        {
            Ok(v) => v,
            Err(e) => return reply.error(errno(&e)),
        };
        let (rank, oid) = match self.ns.node(e.ino) {
            Ok(n) => (n.rank.unwrap_or(0), n.oid),
            Err(err) => return reply.error(errno(&err)),
        };
        let live = self.ns.live.get_or_create(e.ino, oid);
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let backing = self.open_mode(&live, &fd, rank, req.pid(), writable, &|f| {
            reply.open_backing(f.as_fd())
        });
        let mut st = e.attr;
        if req.uid() != 0 && writable && backing.is_some() {
            match self.kill_privs(fd.as_fd()) {
                Ok(Some(mode)) => st.st_mode = mode,
                Ok(None) => {}
                Err(err) => return reply.error(err),
            }
        }
        let fopen = Self::fopen_flags(flags, backing.is_some());
        let (fh, h) = self.new_handle(req, live, fd, flags, backing, Some(&st));
        let attr = to_attr(&st);
        match &h.backing {
            Some(id) => {
                self.count_open(true);
                reply.created_passthrough(
                    &self.entry_ttl,
                    &attr,
                    Generation(e.generation as u64),
                    FileHandle(fh),
                    fopen,
                    id,
                )
            }
            None => {
                self.count_open(false);
                reply.created(
                    &self.entry_ttl,
                    &attr,
                    Generation(e.generation as u64),
                    FileHandle(fh),
                    fopen,
                )
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let fd = match self.fd_of(&h) {
            Ok(fd) => fd,
            Err(e) => return reply.error(e),
        };
        let mut buf = vec![0u8; size as usize];
        let mut done = 0usize;
        while done < buf.len() {
            match sys::pread(fd.as_fd(), &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => {
                    self.note_io_error(&h, &e);
                    return reply.error(Errno::from(e));
                }
            }
        }
        if !h.internal {
            self.ns.heat.read(h.live.oid, done as u64);
        }
        reply.data(&buf[..done]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        // Data-changing: hold the drain lock shared (S11.3), then make
        // sure the descriptor is the current lower.
        let mut drain = h.live.drain.read();
        let _ = smoothfs_uapi::failpoint::hit("write_in_drain");
        let mut fd = match self.fd_of(&h) {
            Ok(fd) => fd,
            Err(e) => return reply.error(e),
        };
        // The writer lacks CAP_FSETID (the kernel says so): set-id bits go
        // before the data changes, as in the kernel's own write path.
        if kill && let Err(e) = self.kill_privs(fd.as_fd()) {
            return reply.error(e);
        }
        let mut relocated = false;
        let mut done = 0usize;
        while done < data.len() {
            match sys::pwrite(fd.as_fd(), &data[done..], offset + done as u64) {
                Ok(n) => done += n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if done > 0 => {
                    debug!("short write after {done} bytes: {e}");
                    break;
                }
                // S5.4: the tier is full; move the file to a tier with room
                // (cutover protocol, in-process) and write there.
                Err(e)
                    if !relocated
                        && h.backing.is_none()
                        && matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) =>
                {
                    relocated = true;
                    drop(drain);
                    match self.relocate_full(&h) {
                        Ok(()) => {}
                        Err(err) => return reply.error(errno(&err)),
                    }
                    drain = h.live.drain.read();
                    fd = match self.fd_of(&h) {
                        Ok(fd) => fd,
                        Err(e) => return reply.error(e),
                    };
                }
                Err(e) => {
                    self.note_io_error(&h, &e);
                    return reply.error(Errno::from(e));
                }
            }
        }
        drop(drain);
        h.live.wrote();
        if !h.internal {
            self.ns.heat.write(h.live.oid, done as u64);
        }
        reply.written(done as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = self.handles.write().remove(&fh.0);
        if let Some(h) = h {
            self.release_mode(&h.live, h.backing.is_some());
            let fd = Arc::clone(&h.fd.lock());
            // One fstat serves the heat estimate and the index snapshot.
            let st = sys::fstat(fd.as_fd());
            if let Some(t) = h.heat_ticket.lock().take() {
                let now = st.as_ref().ok().map(crate::heat::FileStamp::from_stat);
                self.ns.heat.release_passthrough(t, now);
            }
            if let Ok(st) = st {
                self.ns.refresh_snapshot(h.ino, &st);
                if h.created
                    && let Some(s) = self.ns.spill_released(h.ino, st.st_size as u64)
                    && let Some(cb) = &self.on_spill
                {
                    cb(s);
                }
            }
            let ino = h.ino;
            drop(h);
            self.ns.live.maybe_evict(ino);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let fd = match self.fd_of(&h) {
            Ok(fd) => fd,
            Err(e) => return reply.error(e),
        };
        if let Err(e) = sys::fsync(fd.as_fd(), datasync) {
            return reply.error(Errno::from(e));
        }
        // Metadata records of this object become durable with the file (S4.2 item 3).
        match self.ns.placement.sync() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.ns.node(ino.0) {
            Ok(n) if n.kind == KIND_DIR => {
                let fh = self.new_fh();
                self.dirs.write().insert(
                    fh,
                    Arc::new(DirHandle {
                        entries: Mutex::new(Vec::new()),
                    }),
                );
                // The kernel keeps the listing in the directory's page cache
                // and serves later listings from it until the directory
                // changes through the mount (its own create/unlink/rename
                // invalidation) or the daemon invalidates it
                // (docs/semantics.md "Directory listings").
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
                );
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let d = match self.dir_snapshot(fh, ino, offset) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let entries = d.entries.lock();
        // Offsets: 1 = ".", 2 = "..", 2 + i + 1 = entries[i].
        let mut off = offset;
        if off == 0 {
            if reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            off = 1;
        }
        if off == 1 {
            if reply.add(INodeNo(1), 2, FileType::Directory, "..") {
                return reply.ok();
            }
            off = 2;
        }
        for (i, e) in entries.iter().enumerate().skip((off - 2) as usize) {
            if reply.add(
                INodeNo(e.ino),
                2 + i as u64 + 1,
                file_type(e.kind, None),
                &e.name,
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let d = match self.dir_snapshot(fh, ino, offset) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let entries = d.entries.lock();
        // "." and ".." take no lookup reference in READDIRPLUS (the kernel
        // does not instantiate them), so they are sent without one.
        let mut off = offset;
        if off == 0 {
            let Ok(st) = self.ns.getattr(ino.0) else {
                return reply.error(Errno::EIO);
            };
            if reply.add(ino, 1, ".", &Duration::ZERO, &to_attr(&st), Generation(0)) {
                return reply.ok();
            }
            off = 1;
        }
        if off == 1 {
            let parent = self.ns.parent_attr(ino.0);
            if let Some(st) = parent
                && reply.add(
                    INodeNo(st.st_ino),
                    2,
                    "..",
                    &Duration::ZERO,
                    &to_attr(&st),
                    Generation(0),
                )
            {
                return reply.ok();
            }
            off = 2;
        }
        for (i, e) in entries.iter().enumerate().skip((off - 2) as usize) {
            let ent = match self.ns.lookup_child(ino.0, &e.name) {
                Ok(ent) => ent,
                Err(_) => continue,
            };
            if reply.add(
                INodeNo(ent.ino),
                2 + i as u64 + 1,
                &e.name,
                &self.entry_ttl,
                &to_attr(&ent.attr),
                Generation(ent.generation as u64),
            ) {
                // Entry did not fit: the kernel never saw it, undo its lookup.
                self.ns.forget(ent.ino, 1);
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.write().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.ns.fsync_dir(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.ns.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                4096,
                s.f_namemax as u32,
                4096,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let live = self.lower_xattr_live(ino.0, name);
        let _drain = live.as_ref().map(|l| l.drain.read());
        match self.ns.setxattr(ino.0, name, value, flags, req.uid()) {
            Ok(()) => {
                if let Some(l) = &live {
                    l.meta_changed();
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.ns.getxattr(ino.0, name) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() <= size as usize => reply.data(&v),
            Ok(_) => reply.error(Errno::ERANGE),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.ns.listxattr(ino.0) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() <= size as usize => reply.data(&v),
            Ok(_) => reply.error(Errno::ERANGE),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let live = self.lower_xattr_live(ino.0, name);
        let _drain = live.as_ref().map(|l| l.drain.read());
        match self.ns.removexattr(ino.0, name, req.uid()) {
            Ok(()) => {
                if let Some(l) = &live {
                    l.meta_changed();
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel has already checked.
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let _drain = h.live.drain.read();
        let fd = match self.fd_of(&h) {
            Ok(fd) => fd,
            Err(e) => return reply.error(e),
        };
        match sys::fallocate(fd.as_fd(), mode, offset, length) {
            Ok(()) => {
                h.live.wrote();
                reply.ok()
            }
            Err(e) => reply.error(Errno::from(e)),
        }
    }

    /// S2.7/4: the inode-flag ioctls go to the lower file; every other
    /// command (`TCGETS` from isatty(3) is the common one) fails with
    /// ENOTTY, as on a regular file, and without a log line.
    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let Some(req) = FileAttrIoctl::from_cmd(cmd) else {
            return reply.error(Errno::ENOTTY);
        };
        let mut arg = vec![0u8; req.arg_len()];
        if req.sets() {
            if in_data.len() < arg.len() {
                return reply.error(Errno::EINVAL);
            }
            arg.copy_from_slice(&in_data[..req.arg_len()]);
        } else if (out_size as usize) < arg.len() {
            return reply.error(Errno::EINVAL);
        }
        let live = if req.sets() {
            self.meta_live(ino.0)
        } else {
            None
        };
        let _drain = live.as_ref().map(|l| l.drain.read());
        match self.ns.fileattr_ioctl(ino.0, req, &mut arg) {
            Ok(()) if req.sets() => {
                if let Some(l) = &live {
                    l.meta_changed();
                }
                reply.ioctl(0, &[])
            }
            Ok(()) => reply.ioctl(0, &arg),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let fd = match self.fd_of(&h) {
            Ok(fd) => fd,
            Err(e) => return reply.error(e),
        };
        match sys::lseek(fd.as_fd(), offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(Errno::from(e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let (hi, ho) = match (self.handle(fh_in), self.handle(fh_out)) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return reply.error(Errno::EBADF),
        };
        let _drain = ho.live.drain.read();
        let (fi, fo) = match (self.fd_of(&hi), self.fd_of(&ho)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let len = len.min(u32::MAX as u64 & !0xfff);
        let r = match sys::copy_file_range(fi.as_fd(), offset_in, fo.as_fd(), offset_out, len) {
            Ok(n) => Ok(n),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                // Different tiers: copy through a buffer.
                let mut buf = vec![0u8; len.min(1 << 20) as usize];
                sys::pread(fi.as_fd(), &mut buf, offset_in)
                    .and_then(|n| sys::pwrite(fo.as_fd(), &buf[..n], offset_out))
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(n) => {
                ho.live.wrote();
                reply.written(n as u32)
            }
            Err(e) => reply.error(Errno::from(e)),
        }
    }
}
