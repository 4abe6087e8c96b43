//! The mount sequence (S1.9) and the daemon's life until unmount.
//!
//! Order: options (already parsed) -> pool lock -> markers -> tier roots
//! and capability probe -> journal replay (bounded by the journal tail,
//! never a tier walk) -> FUSE session -> pool record -> ready -> serve.
//! `umount` or SIGTERM ends the session; the journal is then synced and
//! checkpointed and the pool record removed.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use fuser::{Config, SessionACL};
use tracing::{error, info, warn};

use crate::control;
use crate::error::{Error, Result};
use crate::fuse::SmoothFs;
use crate::marker::{self, PoolLock};
use crate::namespace::{Namespace, NamespaceConfig};
use crate::options::{DEFAULT_RUN_DIR, MountFlag, MountOptions};
use crate::placement::Placement;
use crate::probe;
use crate::sys;
use crate::tier::Tier;

/// The data plane's periodic work: heat drains every `heat_interval_ms`
/// (S6.3), cleanup after `cleanup_grace_s` (S9.2) and eviction of idle
/// live objects.
struct Maintenance {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Maintenance {
    fn start(
        ns: Arc<Namespace>,
        hub: Arc<control::EventHub>,
        heat_interval_ms: u32,
        health: Arc<crate::health::Health>,
    ) -> Maintenance {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("smoothfs-maint".into())
            .spawn(move || {
                let mut last_sweep = std::time::Instant::now();
                let mut last_heat = std::time::Instant::now();
                let mut last_health = std::time::Instant::now();
                let heat_every =
                    std::time::Duration::from_millis(u64::from(heat_interval_ms.max(100)));
                while !flag.load(Ordering::Acquire) {
                    std::thread::sleep(std::time::Duration::from_millis(250));
                    ns.auto_cleanup();
                    let every = health.interval_ms.load(Ordering::Relaxed);
                    if last_health.elapsed() >= std::time::Duration::from_millis(every) {
                        health.tick(&ns);
                        last_health = std::time::Instant::now();
                    }
                    if last_heat.elapsed() >= heat_every {
                        control::drain_heat(&ns, &hub);
                        last_heat = std::time::Instant::now();
                    }
                    if last_sweep.elapsed() >= std::time::Duration::from_secs(10) {
                        ns.live.sweep();
                        last_sweep = std::time::Instant::now();
                    }
                }
            })
            .map_err(|e| warn!("maintenance thread not started: {e}"))
            .ok();
        Maintenance { stop, thread }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Everything needed to serve one pool, before the FUSE session starts.
pub struct PreparedPool {
    pub opts: MountOptions,
    pub ns: Arc<Namespace>,
    pub lock: PoolLock,
    pub tier_caps: Vec<u32>,
    /// Tier UUIDs from the markers, by rank (TIER_ID, pool record).
    pub tier_ids: Vec<String>,
}

/// Steps of S1.9 up to (not including) the FUSE session.
pub fn prepare(opts: MountOptions) -> Result<PreparedPool> {
    let run_dir = opts
        .socket_path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
    std::fs::create_dir_all(DEFAULT_RUN_DIR)
        .map_err(|e| Error::io(format!("create {DEFAULT_RUN_DIR}"), e))?;
    let lock = PoolLock::acquire(Path::new(DEFAULT_RUN_DIR), opts.uuid)?;
    let _ = run_dir;
    let ident = marker::establish_markers(&opts.tiers, opts.uuid, opts.tunables.meta_rebuild)?;
    let mut tiers = Vec::with_capacity(opts.tiers.len());
    let mut tier_caps = Vec::new();
    let tier_ids: Vec<String> = ident
        .tiers
        .iter()
        .map(|t| t.tier_uuid.hyphenated().to_string())
        .collect();
    for (rank, path) in opts.tiers.iter().enumerate() {
        let caps = probe::probe_tier(rank, path)?;
        let root = marker::open_tier_root(path)?;
        let id = &ident.tiers[rank];
        tier_caps.push(caps.mask);
        tiers.push(Tier::new(
            rank as u8,
            id.slot,
            path.clone(),
            root,
            caps.mask,
        ));
    }
    let meta = &opts.tiers[ident.meta_rank];
    let meta_dir = meta.join(".smoothfs");
    let (placement, report) = Placement::open(&meta_dir, *opts.uuid.as_bytes())?;
    if report.degraded {
        error!(
            "placement journal corrupted: {} record(s) lost; pool flagged degraded",
            report.corrupt_records
        );
    }
    // Apply the lower-file side of replay normalisation (S4.3 table).
    for n in &report.normalised {
        if let Some(slot) = n.remove_slot
            && let Some(t) = tiers.iter().find(|t| t.slot == slot)
        {
            let (p, name) = crate::namespace::split(OsStr::new(&n.rel_path));
            if let Ok(d) = t.open_dir(&p)
                && matches!(sys::lgetxattr(d.as_fd(), &name, c"trusted.smoothfs.oid"), Ok(v) if v == n.oid.0)
                && let Err(e) = sys::unlinkat(d.as_fd(), &name, false)
            {
                warn!(
                    "replay: could not remove copy of {} on tier {}: {e}",
                    n.oid, t.rank
                );
            }
        }
    }
    info!(
        "replayed {} journal record(s), normalised {} object(s)",
        report.records_applied,
        report.normalised.len()
    );
    let ns = Namespace::new(
        tiers,
        placement,
        NamespaceConfig {
            full_pct: opts.tunables.full_pct as u32,
            metadata_mask: opts.metadata_active_tier_mask(),
            read_only: opts.read_only(),
        },
    );
    if !report.unfinished_dir_renames.is_empty() && !opts.read_only() {
        ns.finish_dir_renames(&report.unfinished_dir_renames);
    }
    Ok(PreparedPool {
        opts,
        ns: Arc::new(ns),
        lock,
        tier_caps,
        tier_ids,
    })
}

fn fuse_config(opts: &MountOptions) -> Config {
    let mut c = Config::default();
    c.acl = SessionACL::All;
    c.n_threads = Some(opts.effective_threads().max(1) as usize);
    c.clone_fd = true;
    c
}

fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    // Civil-from-days (Howard Hinnant), UTC.
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

pub fn fsid(uuid: &uuid::Uuid) -> u32 {
    xxhash_rust::xxh32::xxh32(uuid.as_bytes(), 0)
}

/// The pool record `/run/smoothfs/<uuid>.json` (S1.6).
fn write_pool_record(p: &PreparedPool) -> Result<PathBuf> {
    let path = Path::new(DEFAULT_RUN_DIR).join(format!("{}.json", p.opts.uuid_string()));
    let tiers: Vec<serde_json::Value> =
        p.ns.tiers
            .iter()
            .map(|t| {
                serde_json::json!({
                    "rank": t.rank,
                    "path": t.path,
                    "slot": t.slot,
                    "tier_uuid": p.tier_ids.get(t.rank as usize),
                    "caps": t.caps,
                    "passthrough": t.passthrough.load(Ordering::Relaxed),
                })
            })
            .collect();
    let v = serde_json::json!({
        "pool": p.opts.pool,
        "uuid": p.opts.uuid_string(),
        "fsid": format!("0x{:08x}", fsid(&p.opts.uuid)),
        "mountpoint": p.opts.mountpoint,
        "pid": std::process::id(),
        "socket": p.opts.socket_path(),
        "mounted_at": rfc3339_now(),
        "tiers": tiers,
    });
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&v).unwrap_or_default())
        .map_err(|e| Error::io("write pool record", e))?;
    // The daemon runs with umask 0; the record is 0644 (S1.6).
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(|e| Error::io("chmod pool record", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("install pool record", e))?;
    Ok(path)
}

/// Mount and serve until unmounted. `ready` is called once the FUSE mount
/// is live (the mount helper then exits 0).
pub fn run(opts: MountOptions, ready: impl FnOnce()) -> Result<()> {
    // The lower create mode is exactly what we pass (we apply umask ourselves).
    unsafe { libc::umask(0) };
    let pool_name = opts.pool.clone();
    let n_tiers = opts.tiers.len();
    let prepared = prepare(opts)?;
    let cfg = fuse_config(&prepared.opts);
    let t = &prepared.opts.tunables;
    prepared.ns.prepare_movement_dirs();
    let mut fs = SmoothFs::new(
        Arc::clone(&prepared.ns),
        t.passthrough,
        t.entry_timeout,
        t.attr_timeout,
    );
    fs.mediated_comm = t.mediated_comm.clone();
    let hub = control::EventHub::new(prepared.opts.uuid);
    let spill_hub = Arc::clone(&hub);
    fs.on_spill = Some(Box::new(move |s| spill_hub.spill(&s)));
    let mountpoint = prepared.opts.mountpoint.clone();
    let dev = kernel_mount(&prepared.opts)?;
    let session = match fuser::Session::from_fd(fs, dev, SessionACL::All, cfg) {
        Ok(s) => s,
        Err(e) => {
            detach(&mountpoint);
            return Err(Error::io(
                format!("FUSE handshake on {}", mountpoint.display()),
                e,
            ));
        }
    };
    let notifier = session.notifier();
    let _ = prepared.ns.moves.invalidate.set(Box::new(move |ino| {
        // Whole page range and attributes; ENOENT = the kernel holds no inode.
        if let Err(e) = notifier.inval_inode(fuser::INodeNo(ino), 0, 0)
            && e.raw_os_error() != Some(libc::ENOENT)
        {
            warn!("cache invalidation of inode {ino:#x}: {e}");
        }
    }));
    let removed_hub = Arc::clone(&hub);
    let _ = prepared.ns.moves.removed.set(Box::new(move |(oid, gen_)| {
        let _ = removed_hub.publish(&smoothfs_uapi::event::Event::ObjectRemoved(
            smoothfs_uapi::event::ObjectRemoved {
                pool_uuid: removed_hub.pool_uuid(),
                oid: oid.0,
                object_gen: gen_,
            },
        ));
    }));
    let move_hub = Arc::clone(&hub);
    let _ = prepared.ns.moves.emit.set(Box::new(move |e| {
        let _ = move_hub.publish(&smoothfs_uapi::event::Event::MoveState(
            smoothfs_uapi::event::MoveState {
                pool_uuid: move_hub.pool_uuid(),
                oid: e.oid.0,
                movement_state: smoothfs_uapi::ids::MovementState::from_wire(e.state),
                transaction_seq: e.seq,
                current_tier: e.current,
                intended_tier: e.intended,
                failure_reason: e.reason,
            },
        ));
    }));
    let ctl = control::Control::new(
        Arc::clone(&prepared.ns),
        control::PoolInfo {
            uuid: prepared.opts.uuid,
            name: prepared.opts.pool.clone(),
            tier_ids: prepared.tier_ids.clone(),
            read_only: prepared.opts.read_only(),
            heat_interval_ms: t.heat_interval_ms,
            write_staging: t.write_staging,
            mediated_comm: t.mediated_comm.clone(),
            mountpoint: Some(prepared.opts.mountpoint.clone()),
        },
        Arc::clone(&hub),
    );
    let scrubber = Arc::clone(&ctl.scrubber);
    let health = Arc::clone(&ctl.health);
    let tier_hub = Arc::clone(&hub);
    let tier_pool = prepared.opts.pool.clone();
    let spill_ns = Arc::downgrade(&prepared.ns);
    let _ = prepared.ns.moves.tier_event.set(Box::new(move |e| {
        let any_spill = spill_ns
            .upgrade()
            .is_some_and(|ns| ns.counters.any_spill_since_mount.load(Ordering::Relaxed) != 0);
        tier_hub.tier_event(&tier_pool, any_spill, &e);
    }));
    let server = match control::Server::listen(ctl, &prepared.opts.socket_path()) {
        Ok(s) => s,
        Err(e) => {
            detach(&mountpoint);
            return Err(e);
        }
    };
    let record = match write_pool_record(&prepared) {
        Ok(r) => r,
        Err(e) => {
            server.shutdown();
            detach(&mountpoint);
            return Err(e);
        }
    };
    // S4.6: the background scrub, after each mount when one is due or
    // pending (a pass cut short by an unmount or crash resumes).
    if !prepared.opts.read_only() {
        scrubber.start_if_due(crate::scrub::DEFAULT_SCRUB_INTERVAL_S);
    }
    let scrub_thread = match crate::scrub::Scrubber::spawn(scrubber, Arc::clone(&prepared.ns)) {
        Ok(t) => Some(t),
        Err(e) => {
            warn!("scrub thread not started: {e}");
            None
        }
    };
    let maint = Maintenance::start(
        Arc::clone(&prepared.ns),
        Arc::clone(&hub),
        prepared.opts.tunables.heat_interval_ms,
        health,
    );
    hub.set_ready();
    info!("mounted pool '{pool_name}' with {n_tiers} tier(s)");
    spawn_signal_thread(mountpoint.clone());
    ready();
    let result = match session.run() {
        // With several worker threads, the ones still reading /dev/fuse when
        // the kernel tears the connection down (umount) see ENODEV or
        // ECONNABORTED: that is a normal end of the session.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENODEV) | Some(libc::ECONNABORTED)
            ) =>
        {
            info!("FUSE connection closed by the kernel ({e})");
            Ok(())
        }
        other => other,
    };
    // No control thread may outlive the session holding the namespace.
    server.shutdown();
    maint.stop();
    if let Some(t) = scrub_thread {
        t.shutdown();
    }
    // If the loop ended for any reason other than an unmount, don't leave a dead mount behind.
    detach(&mountpoint);
    match &result {
        Ok(()) => info!("FUSE session ended: filesystem unmounted"),
        Err(e) => error!("FUSE session ended with error: {e}"),
    }
    let _ = std::fs::remove_file(&record);
    let PreparedPool { ns, lock, .. } = prepared;
    // Drain deferred metadata: sync + checkpoint the journal.
    match Arc::try_unwrap(ns) {
        Ok(ns) => {
            if let Err(e) = ns.placement.close() {
                error!("closing the placement journal failed: {e}");
            }
        }
        Err(ns) => {
            if let Err(e) = ns.placement.sync() {
                error!("syncing the placement journal failed: {e}");
            }
            let _ = ns.placement.checkpoint();
        }
    }
    drop(lock);
    result.map_err(|e| Error::io("FUSE session", e))
}

/// mount(2) of type `fuse.smoothfs` (fuser's own mount always says
/// `fuse`), with `allow_other,default_permissions` and the caller's source
/// as fsname (S1.4 item 4). Returns the /dev/fuse descriptor to serve.
fn kernel_mount(opts: &MountOptions) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| Error::io("open /dev/fuse", e))?;
    let st = std::fs::metadata(&opts.mountpoint)
        .map_err(|e| Error::io(format!("stat mountpoint {}", opts.mountpoint.display()), e))?;
    use std::os::unix::fs::MetadataExt;
    let data = format!(
        "fd={},rootmode={:o},user_id=0,group_id=0,default_permissions,allow_other",
        dev.as_raw_fd(),
        st.mode() & libc::S_IFMT
    );
    let mut flags: libc::c_ulong = libc::MS_NODEV | libc::MS_NOSUID;
    for f in &opts.flags {
        match f {
            MountFlag::Ro => flags |= libc::MS_RDONLY,
            MountFlag::Rw => flags &= !libc::MS_RDONLY,
            MountFlag::Nosuid => flags |= libc::MS_NOSUID,
            MountFlag::Nodev => flags |= libc::MS_NODEV,
            MountFlag::Noexec => flags |= libc::MS_NOEXEC,
            MountFlag::Noatime => flags |= libc::MS_NOATIME,
            MountFlag::Relatime => flags |= libc::MS_RELATIME,
            MountFlag::Nodiratime => flags |= libc::MS_NODIRATIME,
        }
    }
    let c = |s: &[u8]| {
        std::ffi::CString::new(s)
            .map_err(|_| crate::err!(libc::EINVAL, "NUL byte in mount argument"))
    };
    let source = c(opts.source.as_bytes())?;
    let target = c(opts.mountpoint.as_os_str().as_encoded_bytes())?;
    let fstype = c(b"fuse.smoothfs")?;
    let data = c(data.as_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(Error::io(
            format!("mount(2) on {}", opts.mountpoint.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(dev.into())
}

fn detach(mountpoint: &Path) {
    if let Ok(c) = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()) {
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// SIGTERM/SIGINT: unmount (the session loop then ends and we clean up).
fn spawn_signal_thread(mountpoint: PathBuf) {
    // Block the signals in this thread (inherited by every thread spawned later).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
            unsafe {
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::sigaddset(&mut set, libc::SIGINT);
            }
            let mut sig = 0;
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                info!("signal {sig} received: unmounting {}", mountpoint.display());
                let c = match std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()) {
                    Ok(c) => c,
                    Err(_) => return,
                };
                if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
                    let e = std::io::Error::last_os_error();
                    warn!(
                        "umount {} failed ({e}); detaching lazily",
                        mountpoint.display()
                    );
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
        });
    if let Err(e) = spawned {
        warn!("cannot start the signal thread: {e}");
    }
}

/// Map a mount error to the S0 convention line.
pub fn failure_line(e: &Error) -> String {
    format!("smoothfs: mount failed: {}: {}", e.errno_name(), e)
}
