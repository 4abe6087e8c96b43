//! The control-plane daemon against a fake data plane with many objects:
//! recovery (S19.2/A1–A10), discovery and inventory (S22.2, S7.4), heat
//! rows for unknown objects (S7.3), OBJECT_REMOVED (S7.4/A2), PRUNE_DIRS at
//! discovery (S15.3/1), shutdown unblocking the event receive (S22.2/A6),
//! policy persistence (S29.2) and the control API (S26.6/3).
//!
//! The fake answers SUBSCRIBE (then MOUNT_READY and whatever events the
//! test emits), STATUS, INSPECT, LIST_OBJECTS (paged), MOVE_ABORT,
//! MOVE_CLEANUP, PIN_SET and PRUNE_DIRS, following the S9.2 transitions
//! those commands make; it keeps every request for the assertions.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use serde_json::{Value, json};
use smoothfs_control::daemon::{ControlPlane, DaemonOptions, PoolSource};
use smoothfs_control::recovery::{self, Action, Seen};
use smoothfs_control::store::{
    DiscoveredTier, MoveRef, NewObject, ObjectRow, PoolDiscovery, PoolRecord, Recovery, Store,
    Timestamp, oid_hex,
};
use smoothfs_uapi::client::Client;
use smoothfs_uapi::codec::{Request, decode_request};
use smoothfs_uapi::event::{
    Event, HeatSample, MountReady, ObjectEntry, ObjectRemoved, StatusItem, TierInfo,
};
use smoothfs_uapi::heat::HeatRecord;
use smoothfs_uapi::ids::{
    Attr, Command, MovementState, ObjectKind, PinState, PolicyPin, TierCaps, TierState,
};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// The fake data plane
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct FakeObj {
    rel_path: String,
    tier: u8,
    intended: u8,
    state: MovementState,
    seq: u64,
    pin: PinState,
    size: u64,
}

#[derive(Default)]
struct FakeState {
    objects: BTreeMap<[u8; 16], FakeObj>,
    /// (command, object) for every request.
    log: Vec<(Command, Option<[u8; 16]>)>,
    pin_set_fails: HashSet<[u8; 16]>,
    subscribers: Vec<Arc<OwnedFd>>,
    event_seq: u32,
}

struct FakeDp {
    _dir: Option<tempfile::TempDir>,
    name: String,
    uuid: Uuid,
    socket: PathBuf,
    tiers: Vec<PathBuf>,
    state: Arc<Mutex<FakeState>>,
    stopped: Arc<AtomicBool>,
    listener: Arc<OwnedFd>,
}

fn oid(n: u32) -> [u8; 16] {
    let mut o = [0u8; 16];
    o[0] = 0x01;
    o[12..].copy_from_slice(&n.to_be_bytes());
    o
}

impl FakeDp {
    fn new(name: &str) -> FakeDp {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let mut f = FakeDp::at(name, Uuid::new_v4(), &base.join("pool.sock"), &base);
        f._dir = Some(dir);
        f
    }

    /// A fake listening at `socket` with tiers under `base`.
    fn at(name: &str, uuid: Uuid, socket: &Path, base: &Path) -> FakeDp {
        let tiers: Vec<PathBuf> = (0..2).map(|i| base.join(format!("t{i}"))).collect();
        for t in &tiers {
            std::fs::create_dir_all(t).unwrap();
        }
        let listener = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let _ = std::fs::remove_file(socket);
        rustix::net::bind(&listener, &SocketAddrUnix::new(socket).unwrap()).unwrap();
        rustix::net::listen(&listener, 16).unwrap();
        let listener = Arc::new(listener);
        let state = Arc::new(Mutex::new(FakeState::default()));
        let stopped = Arc::new(AtomicBool::new(false));
        let server = Server {
            name: name.to_string(),
            uuid,
            tiers: tiers.clone(),
            state: Arc::clone(&state),
            stopped: Arc::clone(&stopped),
        };
        let l = Arc::clone(&listener);
        std::thread::spawn(move || {
            while let Ok(conn) = rustix::net::accept(&*l) {
                if server.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let s = server.clone();
                std::thread::spawn(move || s.serve(Arc::new(conn)));
            }
        });
        FakeDp {
            _dir: None,
            name: name.to_string(),
            uuid,
            socket: socket.to_path_buf(),
            tiers,
            state,
            stopped,
            listener,
        }
    }

    fn add(&self, o: [u8; 16], rel_path: &str, tier: u8) {
        self.state.lock().unwrap().objects.insert(
            o,
            FakeObj {
                rel_path: rel_path.to_string(),
                tier,
                intended: tier,
                state: MovementState::Placed,
                seq: 0,
                pin: PinState::None,
                size: 4096,
            },
        );
    }

    fn set(&self, o: [u8; 16], f: impl FnOnce(&mut FakeObj)) {
        f(self.state.lock().unwrap().objects.get_mut(&o).unwrap());
    }

    fn obj(&self, o: [u8; 16]) -> FakeObj {
        self.state.lock().unwrap().objects[&o].clone()
    }

    fn requests(&self, cmd: Command, o: Option<[u8; 16]>) -> usize {
        self.state
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|(c, x)| *c == cmd && (o.is_none() || *x == o))
            .count()
    }

    fn emit(&self, ev: &Event) {
        let mut s = self.state.lock().unwrap();
        s.event_seq += 1;
        let bytes = ev.encode(s.event_seq, false).unwrap();
        for sub in &s.subscribers {
            let _ = rustix::net::send(&**sub, &bytes, SendFlags::NOSIGNAL);
        }
    }

    fn subscribers_open(&self) -> usize {
        let s = self.state.lock().unwrap();
        s.subscribers
            .iter()
            .filter(|fd| {
                // A closed peer makes a non-blocking peek return 0 bytes.
                let mut b = [0u8; 1];
                !matches!(
                    rustix::net::recv(&***fd, &mut b[..], RecvFlags::PEEK | RecvFlags::DONTWAIT),
                    Ok((_, 0))
                )
            })
            .count()
    }

    /// The pool goes away: listener and every connection closed.
    fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = rustix::net::shutdown(&*self.listener, rustix::net::Shutdown::Both);
        let mut s = self.state.lock().unwrap();
        for sub in s.subscribers.drain(..) {
            let _ = rustix::net::shutdown(&*sub, rustix::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    fn discovery(&self) -> PoolDiscovery {
        PoolDiscovery {
            uuid: self.uuid,
            name: self.name.clone(),
            tiers: self
                .tiers
                .iter()
                .enumerate()
                .map(|(i, p)| DiscoveredTier {
                    rank: i as u8,
                    path: p.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Clone)]
struct Server {
    name: String,
    uuid: Uuid,
    tiers: Vec<PathBuf>,
    state: Arc<Mutex<FakeState>>,
    stopped: Arc<AtomicBool>,
}

fn tier_infos(tiers: &[PathBuf]) -> Vec<TierInfo> {
    tiers
        .iter()
        .enumerate()
        .map(|(i, t)| TierInfo {
            rank: i as u8,
            caps: TierCaps(0xffff),
            tier_path: t.clone(),
            tier_id: format!("tier-{i}"),
            state: TierState::Ok,
            passthrough: true,
        })
        .collect()
}

impl Server {
    fn serve(&self, conn: Arc<OwnedFd>) {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match rustix::net::recv(conn.as_fd(), &mut buf[..], RecvFlags::empty()) {
                Ok((_, 0)) | Err(_) => return,
                Ok((_, n)) => n,
            };
            if self.stopped.load(Ordering::SeqCst) {
                return;
            }
            let reply = match decode_request(&buf[..n]) {
                Ok(req) if req.command == Command::Subscribe => {
                    self.subscribe(&req, &conn);
                    continue;
                }
                Ok(req) => self.handle(&req),
                Err(e) => e.to_reply(),
            };
            if rustix::net::send(conn.as_fd(), &reply, SendFlags::NOSIGNAL).is_err() {
                return;
            }
        }
    }

    fn subscribe(&self, req: &Request<'_>, conn: &Arc<OwnedFd>) {
        let mut r = req.reply();
        r.put_u32(Attr::ProtocolVersion, 1);
        let _ = rustix::net::send(conn.as_fd(), &r.finish().unwrap(), SendFlags::NOSIGNAL);
        let mut s = self.state.lock().unwrap();
        s.event_seq += 1;
        let ev = Event::MountReady(MountReady {
            pool_uuid: self.uuid,
            pool_name: self.name.clone(),
            fsid: 0,
            any_spill_since_mount: false,
            tiers: tier_infos(&self.tiers),
            protocol_version: 1,
            journal_seq: 1,
        });
        let _ = rustix::net::send(
            conn.as_fd(),
            &ev.encode(s.event_seq, false).unwrap(),
            SendFlags::NOSIGNAL,
        );
        s.subscribers.push(Arc::clone(conn));
    }

    fn handle(&self, req: &Request<'_>) -> Vec<u8> {
        let mut s = self.state.lock().unwrap();
        let a = &req.attrs;
        let o = a.get_id16(Attr::ObjectId).ok().flatten();
        s.log.push((req.command, o));
        if a.get_id16(Attr::PoolUuid).ok().flatten() != Some(*self.uuid.as_bytes()) {
            return req.error_reply(libc::ENODEV, "wrong pool");
        }
        let mut r = req.reply();
        match req.command {
            Command::Status => {
                r.put_list(Attr::Tiers, tier_infos(&self.tiers), |w, t| t.encode(w));
                r.put_list(
                    Attr::StatusItems,
                    [("metadata_active_tier_mask", "0x3")],
                    |w, (n, v)| {
                        StatusItem {
                            name: n.into(),
                            value: v.into(),
                        }
                        .encode(w)
                    },
                );
            }
            Command::Inspect => {
                let Some(obj) = o.and_then(|o| s.objects.get(&o)) else {
                    return req.error_reply(libc::ENOENT, "no such object");
                };
                r.put_bytes(Attr::ObjectId, &o.unwrap())
                    .put_u8(Attr::ObjectKind, 1)
                    .put_u64(Attr::Inode, 42)
                    .put_u8(Attr::CurrentTier, obj.tier)
                    .put_u8(Attr::IntendedTier, obj.intended)
                    .put_u8(Attr::MovementState, obj.state.number())
                    .put_u8(Attr::PinState, obj.pin.number())
                    .put_u8(Attr::PolicyPin, 0)
                    .put_u32(Attr::Generation, 0)
                    .put_u64(Attr::TransactionSeq, obj.seq)
                    .put_u64(Attr::WriteSeq, 1)
                    .put_u8(Attr::RangeStaged, 0)
                    .put_path(Attr::RelPath, Path::new(&obj.rel_path))
                    .put_path(Attr::TierPath, &self.tiers[obj.tier as usize])
                    .put_path(
                        Attr::LowerPath,
                        &self.tiers[obj.tier as usize].join(&obj.rel_path),
                    )
                    .put_u64(Attr::SizeBytes, obj.size)
                    .put_u64(Attr::MtimeNs, 0)
                    .put_u32(Attr::Nlink, 1)
                    .put_u32(Attr::PassthroughHandles, 0)
                    .put_u32(Attr::MediatedHandles, 0);
            }
            Command::ListObjects => {
                // Like the data plane, a page ends early before OBJECTS
                // outgrows one attribute.
                let limit =
                    (a.get_u32(Attr::Limit).ok().flatten().unwrap_or(1000) as usize).min(400);
                let after: Option<[u8; 16]> =
                    a.get_bytes(Attr::Cursor).map(|b| b.try_into().unwrap());
                let page: Vec<ObjectEntry> = s
                    .objects
                    .iter()
                    .filter(|(k, _)| after.is_none_or(|c| **k > c))
                    .take(limit + 1)
                    .map(|(k, v)| ObjectEntry {
                        oid: *k,
                        kind: ObjectKind::Regular,
                        current_tier: v.tier,
                        movement_state: v.state,
                        pin_state: v.pin,
                        policy_pin: PolicyPin::None,
                        mediated: false,
                        size_bytes: v.size,
                        mtime_ns: 0,
                        nlink: 1,
                        object_gen: 1,
                        rel_path: PathBuf::from(&v.rel_path),
                    })
                    .collect();
                let more = page.len() > limit;
                let page = &page[..page.len().min(limit)];
                r.put_list(Attr::Objects, page, |w, e| e.encode(w))
                    .put_u64(Attr::JournalSeq, 7);
                if more && let Some(last) = page.last() {
                    r.put_bytes(Attr::Cursor, &last.oid);
                }
            }
            Command::MoveAbort => {
                let seq = a.require_u64(Attr::TransactionSeq).unwrap();
                let Some(obj) = o.and_then(|o| s.objects.get_mut(&o)) else {
                    return req.error_reply(libc::ENOENT, "no such object");
                };
                if obj.state != MovementState::PlanAccepted {
                    return req.error_reply(libc::EINVAL, "no movement in flight");
                }
                if obj.seq != seq {
                    return req.error_reply(libc::ESTALE, "seq");
                }
                obj.state = MovementState::Placed;
                obj.intended = obj.tier;
                obj.seq = 0;
                r.put_u8(Attr::MovementState, 0);
            }
            Command::MoveCleanup => {
                let seq = a.require_u64(Attr::TransactionSeq).unwrap();
                let Some(obj) = o.and_then(|o| s.objects.get_mut(&o)) else {
                    return req.error_reply(libc::ENOENT, "no such object");
                };
                if obj.state != MovementState::Switched {
                    return req.error_reply(libc::EINVAL, "not switched");
                }
                if obj.seq != seq {
                    return req.error_reply(libc::ESTALE, "seq");
                }
                obj.state = MovementState::Placed;
                obj.seq = 0;
                r.put_u8(Attr::MovementState, 9)
                    .put_u32(Attr::CleanupErrno, 0);
            }
            Command::PinSet => {
                let o = o.unwrap();
                if s.pin_set_fails.contains(&o) {
                    return req.error_reply(libc::EIO, "pin store failed (test)");
                }
                let Some(obj) = s.objects.get_mut(&o) else {
                    return req.error_reply(libc::ENOENT, "no such object");
                };
                if let Some(p) = a.get_u8(Attr::PinState).ok().flatten() {
                    obj.pin = PinState::from_wire(p);
                }
                r.put_u8(Attr::PinState, obj.pin.number())
                    .put_u8(Attr::PolicyPin, 0)
                    .put_bool(Attr::Mediated, false);
            }
            Command::PruneDirs => {
                r.put_list(
                    Attr::StatusItems,
                    [
                        ("dirs_removed", "0"),
                        ("dirs_updated", "0"),
                        ("dirs_kept", "0"),
                    ],
                    |w, (n, v)| {
                        StatusItem {
                            name: n.into(),
                            value: v.into(),
                        }
                        .encode(w)
                    },
                );
            }
            _ => return req.error_reply(libc::EOPNOTSUPP, "not in the fake"),
        }
        r.finish().unwrap()
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn new_object(pool: &PoolRecord, n: u32, rank: u8, pin: PinState) -> NewObject {
    NewObject {
        oid: oid(n),
        namespace_id: pool.namespace_id.clone(),
        current_tier_id: pool.tiers[rank as usize].id.clone(),
        rel_path: format!("f{n}"),
        size_bytes: 4096,
        mtime_ns: 0,
        pin_state: pin,
        policy_pin: PolicyPin::None,
        mediated: false,
        object_gen: 1,
    }
}

/// A row taken through the move's steps up to and including `to` (0 → 1,
/// seq `seq`).
fn row_in_state(store: &mut Store, pool: &PoolRecord, n: u32, seq: u64, to: MovementState) {
    use MovementState::*;
    let mv = MoveRef {
        transaction_seq: seq,
        source_tier_id: &pool.tiers[0].id,
        dest_tier_id: &pool.tiers[1].id,
        rel_path: "",
    };
    for s in [
        PlanAccepted,
        DestinationReserved,
        CopyInProgress,
        CopyComplete,
        CopyVerified,
        CutoverInProgress,
        Switched,
        CleanupInProgress,
        CleanupComplete,
    ] {
        store
            .set_state(&oid(n), s, &mv, "", Timestamp::now())
            .unwrap();
        if s == to {
            return;
        }
    }
}

fn row(store: &Store, n: u32) -> ObjectRow {
    store.object(&oid(n)).unwrap().unwrap()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn daemon_opts(db: &Path, sockets: Vec<PathBuf>) -> DaemonOptions {
    let mut o = DaemonOptions::new(db);
    o.pools = PoolSource::Sockets(sockets);
    o.api_socket = None;
    // No metrics endpoint: parallel tests would fight over the port.
    o.policy_overrides = vec![("smoothfs_metrics_listen".into(), String::new())];
    o
}

fn wait_ready(cp: &ControlPlane, uuid: Uuid) {
    wait_for("the pool to be ready", Duration::from_secs(10), || {
        cp.pools().iter().any(|p| p.uuid == uuid && p.ready)
    });
}

// ---------------------------------------------------------------------------
// Recovery (S19.2)
// ---------------------------------------------------------------------------

/// S19.2/A1, A3, A5, A7, A8 and ENOENT, through the wire.
#[test]
fn recovery_rolls_back_before_the_switch_and_leaves_settled_rows_alone() {
    use MovementState::*;
    let dp = FakeDp::new("rec");
    let store = Mutex::new(Store::open_in_memory().unwrap());
    let pool = store
        .lock()
        .unwrap()
        .register_pool(&dp.discovery())
        .unwrap();
    // A8: nothing to recover.
    let mut client = Client::connect(&dp.socket).unwrap();
    let r = recovery::recover_pool(&store, &mut client, &dp.uuid, &pool).unwrap();
    assert_eq!(r.scanned, 0);

    let pre = [
        PlanAccepted,
        DestinationReserved,
        CopyInProgress,
        CopyComplete,
        CopyVerified,
    ];
    {
        let mut st = store.lock().unwrap();
        for n in 1..=12 {
            st.insert_object(&new_object(&pool, n, 0, PinState::None), Timestamp::now())
                .unwrap();
            dp.add(oid(n), &format!("f{n}"), 0);
        }
        for (i, s) in pre.iter().enumerate() {
            let n = i as u32 + 1;
            row_in_state(&mut st, &pool, n, 100 + u64::from(n), *s);
            // Objects 1-3: the data plane still holds our plan; 4-5: placed.
            if n <= 3 {
                dp.set(oid(n), |o| {
                    o.state = PlanAccepted;
                    o.seq = 100 + u64::from(n);
                    o.intended = 1;
                });
            }
        }
        // A3: cutover_in_progress with the data plane on the source.
        row_in_state(&mut st, &pool, 6, 106, CutoverInProgress);
        // A switched row whose object the data plane has on the source.
        row_in_state(&mut st, &pool, 7, 107, Switched);
        // A5: placed (8) and stale (9) rows.
        st.mark_stale(&oid(9), Timestamp::now()).unwrap();
        // Gone: a copying row whose object no longer exists.
        row_in_state(&mut st, &pool, 10, 110, CopyInProgress);
    }
    dp.state.lock().unwrap().objects.remove(&oid(10));
    let r = recovery::recover_pool(&store, &mut client, &dp.uuid, &pool).unwrap();
    let st = store.lock().unwrap();
    for (i, s) in pre.iter().enumerate() {
        let n = i as u32 + 1;
        let x = row(&st, n);
        assert_eq!(x.movement_state, Placed, "row {n} from {s}");
        assert_eq!(x.current_tier_id, pool.tiers[0].id, "row {n}");
        assert_eq!(x.intended_tier_id, None);
        assert_eq!(x.failure_reason, format!("recovered: rolled back from {s}"));
        assert_eq!(x.last_committed_cutover_gen, 0);
        assert_eq!(dp.obj(oid(n)).state, Placed);
        assert_eq!(
            dp.requests(Command::MoveAbort, Some(oid(n))),
            usize::from(n <= 3),
            "MOVE_ABORT only for plans the data plane still holds (row {n})"
        );
    }
    let x6 = row(&st, 6);
    assert_eq!(
        (x6.movement_state, x6.current_tier_id.as_str()),
        (Placed, pool.tiers[0].id.as_str())
    );
    assert_eq!(
        x6.failure_reason,
        "recovered: rolled back from cutover_in_progress"
    );
    // Row 7 was `switched` (its row already on tier 1) but the data plane
    // has the object placed on tier 0: rolled back, pointing at tier 0.
    let x7 = row(&st, 7);
    assert_eq!(
        (x7.movement_state, x7.current_tier_id.as_str()),
        (Placed, pool.tiers[0].id.as_str())
    );
    assert_eq!(x7.failure_reason, "recovered: rolled back from switched");
    // A5.
    assert_eq!(row(&st, 8).movement_state, Placed);
    assert_eq!(row(&st, 8).failure_reason, "");
    assert_eq!(row(&st, 9).movement_state, Stale);
    assert_eq!(dp.requests(Command::Inspect, Some(oid(8))), 0);
    assert_eq!(dp.requests(Command::Inspect, Some(oid(9))), 0);
    // Gone.
    let x10 = row(&st, 10);
    assert_eq!(
        (x10.movement_state, x10.failure_reason.as_str()),
        (Stale, "recovered: object gone")
    );
    assert_eq!(r.gone, 1);
    assert!(st.recovery_rows(&pool.namespace_id).unwrap().is_empty());
    // Each recovered row got exactly one log row `<state>`→placed.
    let log = st
        .movement_log(&smoothfs_control::store::LogQuery {
            object_id: Some(oid(4)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(log[0].from_state, Some(CopyComplete));
    assert_eq!(log[0].to_state, Placed);
}

/// S19.2/A2, A4, A5 (cleanup_complete), A6, A7 and A10.
#[test]
fn recovery_forwards_after_the_switch_and_repairs_lun_pins() {
    use MovementState::*;
    let dp = FakeDp::new("fwd");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store = Mutex::new(Store::open(&db).unwrap());
    let pool = store
        .lock()
        .unwrap()
        .register_pool(&dp.discovery())
        .unwrap();
    {
        let mut st = store.lock().unwrap();
        for n in 1..=10 {
            let pin = if (5..=9).contains(&n) {
                PinState::PinLun
            } else {
                PinState::None
            };
            st.insert_object(&new_object(&pool, n, 0, pin), Timestamp::now())
                .unwrap();
            dp.add(oid(n), &format!("f{n}"), 0);
        }
        // A2: each post-cutover state with the data plane on the destination.
        for (n, s) in [
            (1, CutoverInProgress),
            (2, Switched),
            (3, CleanupInProgress),
        ] {
            row_in_state(&mut st, &pool, n, 200 + u64::from(n), s);
        }
        // A5: cleanup_complete with the data plane on the destination.
        row_in_state(&mut st, &pool, 4, 204, CleanupComplete);
        // A4: LUN rows, one rolled back (5), one forwarded (6).
        row_in_state(&mut st, &pool, 5, 205, CopyComplete);
        row_in_state(&mut st, &pool, 6, 206, Switched);
        // A6: a failed LUN row; the data plane has it on tier 1 now.
        row_in_state(&mut st, &pool, 7, 207, PlanAccepted);
        let mv = MoveRef {
            transaction_seq: 207,
            source_tier_id: &pool.tiers[0].id,
            dest_tier_id: &pool.tiers[1].id,
            rel_path: "",
        };
        let policy = smoothfs_control::config::PolicyConfig::default();
        st.record_failure(&oid(7), &mv, "checksum mismatch", &policy, Timestamp::now())
            .unwrap();
        // A10: two LUN rows rolled back; PIN_SET fails for the first.
        row_in_state(&mut st, &pool, 8, 208, CopyInProgress);
        row_in_state(&mut st, &pool, 9, 209, CopyInProgress);
        // A7: post-cutover row without an intended tier.
        row_in_state(&mut st, &pool, 10, 210, CutoverInProgress);
    }
    let raw = rusqlite::Connection::open(&db).unwrap();
    raw.execute(
        "UPDATE smoothfs_objects SET intended_tier_id = NULL WHERE object_id = ?1",
        [oid_hex(&oid(10))],
    )
    .unwrap();
    for n in 1..=4 {
        dp.set(oid(n), |o| {
            o.tier = 1;
            o.intended = 1;
        });
    }
    // Row 2 (switched): the data plane still holds the switch, awaiting
    // MOVE_CLEANUP.
    dp.set(oid(2), |o| {
        o.state = Switched;
        o.seq = 202;
    });
    dp.set(oid(6), |o| {
        o.tier = 1;
        o.intended = 1;
    });
    dp.set(oid(7), |o| {
        o.tier = 1;
        o.intended = 1;
        o.pin = PinState::PinLun;
    });
    dp.state.lock().unwrap().pin_set_fails.insert(oid(8));

    let mut client = Client::connect(&dp.socket).unwrap();
    let r = recovery::recover_pool(&store, &mut client, &dp.uuid, &pool).unwrap();
    let st = store.lock().unwrap();
    for n in 1..=4 {
        let x = row(&st, n);
        assert_eq!(x.movement_state, Placed, "row {n}");
        assert_eq!(x.current_tier_id, pool.tiers[1].id, "row {n}");
        assert_eq!(x.last_committed_cutover_gen, 1, "row {n}: gen + 1");
        assert!(x.last_movement_at.is_some());
        assert!(
            x.failure_reason.starts_with("recovered: forwarded from"),
            "{}",
            x.failure_reason
        );
    }
    assert_eq!(dp.requests(Command::MoveCleanup, Some(oid(2))), 1);
    assert_eq!(dp.obj(oid(2)).state, Placed);
    // A4: source re-pinned (5), destination re-pinned (6).
    assert_eq!(row(&st, 5).current_tier_id, pool.tiers[0].id);
    assert_eq!(dp.obj(oid(5)).pin, PinState::PinLun);
    assert_eq!(row(&st, 6).current_tier_id, pool.tiers[1].id);
    assert_eq!(dp.obj(oid(6)).pin, PinState::PinLun);
    // A6.
    let x7 = row(&st, 7);
    assert_eq!(x7.movement_state, Failed);
    assert_eq!(x7.failure_reason, "checksum mismatch");
    assert_eq!(x7.last_committed_cutover_gen, 0);
    assert_eq!(x7.current_tier_id, pool.tiers[1].id);
    assert_eq!(dp.requests(Command::PinSet, Some(oid(7))), 0);
    // A10: the first repair failed and is marked; the second still ran.
    let x8 = row(&st, 8);
    assert_eq!(x8.movement_state, Placed);
    assert!(
        x8.failure_reason
            .starts_with("recovered: lun pin repair failed:"),
        "{}",
        x8.failure_reason
    );
    assert_eq!(dp.obj(oid(9)).pin, PinState::PinLun);
    assert_eq!(
        row(&st, 9).failure_reason,
        "recovered: rolled back from copy_in_progress"
    );
    assert_eq!((r.lun_repaired, r.lun_repair_failed), (3, 1));
    // A7: left alone.
    assert_eq!(row(&st, 10).movement_state, CutoverInProgress);
    assert_eq!(r.left_alone, 1);
}

/// The S19.2/2 table, row by row, without a socket.
#[test]
fn recovery_decisions_follow_the_table() {
    use MovementState::*;
    let base = ObjectRow {
        object_id: oid(1),
        namespace_id: "ns".into(),
        current_tier_id: "t0".into(),
        intended_tier_id: Some("t1".into()),
        movement_state: CopyInProgress,
        pin_state: PinState::None,
        policy_pin: PolicyPin::None,
        pin_origin: String::new(),
        mediated: false,
        transaction_seq: 5,
        last_committed_cutover_gen: 0,
        object_gen: 0,
        size_bytes: 0,
        mtime_ns: 0,
        failure_reason: String::new(),
        deferred_reason: String::new(),
        attempts: 0,
        next_attempt_at: None,
        ewma_value: None,
        last_heat_sample_at: None,
        last_movement_at: None,
        created_at: String::new(),
        updated_at: String::new(),
        rel_path: "f".into(),
    };
    let tier = |r: u8| Some(format!("t{r}"));
    let seen = |state, rank, seq| Seen::Object {
        state,
        current_rank: rank,
        transaction_seq: seq,
    };
    let rb = |s: &str| Recovery::RolledBack {
        reason: format!("recovered: rolled back from {s}"),
    };
    let fw = |s: &str| Recovery::Forwarded {
        reason: format!("recovered: forwarded from {s}"),
    };
    let d = |row: &ObjectRow, s: &Seen| recovery::decide(row, Some(1), s, &tier);
    assert_eq!(
        d(&base, &seen(PlanAccepted, 0, 5)),
        Action::AbortThenRow(rb("copy_in_progress"))
    );
    assert_eq!(
        d(&base, &seen(Placed, 0, 0)),
        Action::Row(rb("copy_in_progress"))
    );
    let post = ObjectRow {
        movement_state: Switched,
        current_tier_id: "t1".into(),
        ..base.clone()
    };
    assert_eq!(
        recovery::decide(&post, Some(1), &seen(Switched, 1, 5), &tier),
        Action::CleanupThenRow(fw("switched"))
    );
    let cut = ObjectRow {
        movement_state: CutoverInProgress,
        ..base.clone()
    };
    assert_eq!(
        d(&cut, &seen(Placed, 1, 0)),
        Action::Row(fw("cutover_in_progress"))
    );
    assert_eq!(
        d(&cut, &seen(PlanAccepted, 0, 5)),
        Action::AbortThenRow(rb("cutover_in_progress"))
    );
    assert_eq!(
        d(&cut, &seen(Placed, 0, 0)),
        Action::Row(rb("cutover_in_progress"))
    );
    let no_intended = ObjectRow {
        intended_tier_id: None,
        ..cut.clone()
    };
    assert!(matches!(
        recovery::decide(&no_intended, None, &seen(Placed, 1, 0), &tier),
        Action::Leave(_)
    ));
    let failed = ObjectRow {
        movement_state: Failed,
        ..base.clone()
    };
    assert_eq!(
        d(&failed, &seen(Placed, 1, 0)),
        Action::Row(Recovery::FailedOn {
            tier_id: "t1".into()
        })
    );
    assert_eq!(
        d(&base, &Seen::Gone),
        Action::Row(Recovery::Gone {
            reason: "recovered: object gone".into()
        })
    );
}

// ---------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------

fn heat(o: [u8; 16], opens: u32, read: u64) -> HeatRecord {
    HeatRecord {
        oid: o,
        open_count_delta: opens,
        read_bytes_delta: read,
        ..HeatRecord::default()
    }
}

/// S7.4/A1, S7.3/A1–A2, S7.4/A2, S15.3/1, S22.2/A6.
#[test]
fn daemon_discovers_inventories_ingests_heat_and_stops_promptly() {
    let dp = FakeDp::new("disc");
    for n in 1..=2500 {
        dp.add(oid(n), &format!("dir/f{n}"), (n % 2) as u8);
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    let cp = ControlPlane::start(daemon_opts(&db, vec![dp.socket.clone()])).unwrap();
    wait_ready(&cp, dp.uuid);
    let reader = Store::open(&db).unwrap();
    let pool = reader.find_pool(&dp.uuid, "disc").unwrap().unwrap();
    assert_eq!(pool.tiers.len(), 2);
    // S7.4/A1: every object has a placed, never-sampled row (3 pages).
    let counts = reader.state_counts(&pool.namespace_id).unwrap();
    assert_eq!(counts, vec![(MovementState::Placed, 2500)]);
    let r = reader.object(&oid(7)).unwrap().unwrap();
    assert_eq!((r.ewma_value, r.last_heat_sample_at), (Some(0.0), None));
    assert_eq!(r.current_tier_id, pool.tiers[1].id);
    assert!(dp.requests(Command::ListObjects, None) >= 7);
    assert!(
        dp.requests(Command::PruneDirs, None) >= 1,
        "PRUNE_DIRS at discovery"
    );

    // Heat for a listed object, an unlisted one (created after the
    // inventory) and one that is gone.
    dp.add(oid(9000), "late", 0);
    dp.emit(&Event::HeatSample(HeatSample {
        pool_uuid: dp.uuid,
        records: vec![
            heat(oid(7), 1, 1000),
            heat(oid(9000), 3, 1 << 20),
            heat(oid(9001), 1, 1),
        ],
    }));
    wait_for("heat rows", Duration::from_secs(5), || {
        reader.object(&oid(9000)).unwrap().is_some()
            && reader.object(&oid(7)).unwrap().unwrap().ewma_value == Some(5096.0)
    });
    let late = reader.object(&oid(9000)).unwrap().unwrap();
    assert_eq!(late.ewma_value, Some(3.0 * 4096.0 + f64::from(1 << 20)));
    assert_eq!(late.rel_path, "late");
    assert_eq!(late.current_tier_id, pool.tiers[0].id);
    std::thread::sleep(Duration::from_millis(300));
    assert!(reader.object(&oid(9001)).unwrap().is_none());

    // S7.4/A2: OBJECT_REMOVED makes the row stale at once.
    dp.emit(&Event::ObjectRemoved(ObjectRemoved {
        pool_uuid: dp.uuid,
        oid: oid(8),
        object_gen: 1,
    }));
    wait_for(
        "the removed object's row to be stale",
        Duration::from_secs(5),
        || reader.object(&oid(8)).unwrap().unwrap().movement_state == MovementState::Stale,
    );

    // S22.2/A6: stopping closes the event connection within 5 s.
    assert_eq!(dp.subscribers_open(), 1);
    let t = Instant::now();
    cp.stop();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t.elapsed()
    );
    wait_for("the subscription to close", Duration::from_secs(2), || {
        dp.subscribers_open() == 0
    });
}

/// S19.2/A9: rows of a pool that is not mounted are left alone until its
/// socket appears, then recovered. S22.2/4: a closed socket makes the pool
/// offline.
#[test]
fn unmounted_pools_are_recovered_when_they_appear_and_go_offline_when_closed() {
    use MovementState::*;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b_socket = b_dir.join("pool.sock");
    let b_uuid = Uuid::new_v4();
    let a = FakeDp::new("pool-a");
    // Pool B's rows, recorded by an earlier run.
    {
        let mut st = Store::open(&db).unwrap();
        let b = st
            .register_pool(&PoolDiscovery {
                uuid: b_uuid,
                name: "pool-b".into(),
                tiers: (0..2)
                    .map(|i| DiscoveredTier {
                        rank: i,
                        path: b_dir.join(format!("t{i}")),
                    })
                    .collect(),
            })
            .unwrap();
        st.insert_object(&new_object(&b, 1, 0, PinState::None), Timestamp::now())
            .unwrap();
        row_in_state(&mut st, &b, 1, 11, CopyInProgress);
    }
    let cp =
        ControlPlane::start(daemon_opts(&db, vec![a.socket.clone(), b_socket.clone()])).unwrap();
    wait_ready(&cp, a.uuid);
    std::thread::sleep(Duration::from_millis(500));
    let reader = Store::open(&db).unwrap();
    assert_eq!(
        reader.object(&oid(1)).unwrap().unwrap().movement_state,
        CopyInProgress,
        "rows of an unmounted pool are not touched"
    );
    // Pool B appears; its data plane holds our plan.
    let b = FakeDp::at("pool-b", b_uuid, &b_socket, &b_dir);
    b.add(oid(1), "f1", 0);
    b.set(oid(1), |o| {
        o.state = PlanAccepted;
        o.seq = 11;
        o.intended = 1;
    });
    wait_ready(&cp, b_uuid);
    let r = reader.object(&oid(1)).unwrap().unwrap();
    assert_eq!(r.movement_state, Placed);
    assert_eq!(
        r.failure_reason,
        "recovered: rolled back from copy_in_progress"
    );
    assert_eq!(b.obj(oid(1)).state, Placed);
    // S22.2/4.
    a.shutdown();
    wait_for("pool A offline", Duration::from_secs(5), || {
        cp.pools().iter().any(|p| p.uuid == a.uuid && !p.online)
    });
    assert!(cp.pools().iter().any(|p| p.uuid == b_uuid && p.online));
    cp.stop();
}

/// An orphaned plan (MOVE_PLAN accepted, `plan_accepted` never committed)
/// is aborted by the first inventory; an operator's plan is not.
#[test]
fn orphaned_plans_of_ours_are_aborted_at_discovery() {
    let dp = FakeDp::new("orphan");
    dp.add(oid(1), "ours", 0);
    dp.add(oid(2), "operator", 0);
    dp.set(oid(1), |o| {
        o.state = MovementState::PlanAccepted;
        o.seq = 3;
        o.intended = 1;
    });
    dp.set(oid(2), |o| {
        o.state = MovementState::PlanAccepted;
        o.seq = 1_750_000_000_000_000;
        o.intended = 1;
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    {
        // The rows exist and say `placed`.
        let mut st = Store::open(&db).unwrap();
        let pool = st.register_pool(&dp.discovery()).unwrap();
        for n in 1..=2 {
            st.insert_object(&new_object(&pool, n, 0, PinState::None), Timestamp::now())
                .unwrap();
        }
    }
    let cp = ControlPlane::start(daemon_opts(&db, vec![dp.socket.clone()])).unwrap();
    wait_ready(&cp, dp.uuid);
    assert_eq!(dp.obj(oid(1)).state, MovementState::Placed);
    assert_eq!(dp.obj(oid(2)).state, MovementState::PlanAccepted);
    cp.stop();
}

/// S29.2: `--policy` values are validated, stored and used; the control
/// API answers `ping`, `move_status`, `move_retry` and `move_abort`.
#[test]
fn policy_overrides_persist_and_the_api_answers() {
    let dp = FakeDp::new("api");
    dp.add(oid(1), "f1", 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    let api = dir.path().join("controlplane-test.sock");
    let mut opts = daemon_opts(&db, vec![dp.socket.clone()]);
    opts.api_socket = Some(api.clone());
    opts.policy_overrides = vec![
        ("smoothfs_planner_interval_seconds".into(), "2".into()),
        ("hysteresis_pct".into(), "0".into()),
        ("smoothfs_worker_count".into(), "0".into()),
        ("smoothfs_metrics_listen".into(), String::new()),
    ];
    let cp = ControlPlane::start(opts).unwrap();
    assert_eq!(cp.policy().planner_interval_seconds, 2);
    assert_eq!(cp.policy().hysteresis_pct, 0);
    assert_eq!(cp.policy().worker_count, 4, "an invalid value is ignored");
    wait_ready(&cp, dp.uuid);
    let call = |op: &str, args: Value| -> Value {
        let mut s = UnixStream::connect(&api).unwrap();
        s.write_all(format!("{}\n", json!({"op": op, "args": args})).as_bytes())
            .unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(call("ping", json!({}))["result"], "pong");
    let st = call("move_status", json!({}));
    assert_eq!(st["ok"], true);
    assert_eq!(st["result"]["pools"][0]["name"], "api");
    assert_eq!(st["result"]["running"], json!([]));
    let r = call("move_retry", json!({"object_id": oid_hex(&oid(1))}));
    assert_eq!(r["ok"], true, "{r}");
    let r = call("move_retry", json!({"object_id": oid_hex(&oid(99))}));
    assert_eq!(
        (r["ok"].clone(), r["errno"].clone()),
        (json!(false), json!("ENOENT"))
    );
    let r = call("move_abort", json!({"object_id": oid_hex(&oid(1))}));
    assert_eq!(r["errno"], "ENOENT", "{r}");
    let r = call("nonsense", json!({}));
    assert_eq!(r["errno"], "EOPNOTSUPP");
    cp.stop();
    assert!(!api.exists(), "the API socket is removed at stop");
    let st = Store::open(&db).unwrap();
    assert_eq!(
        st.config_get("smoothfs_planner_interval_seconds")
            .unwrap()
            .as_deref(),
        Some("2")
    );
    assert_eq!(
        st.config_get("smoothfs_hysteresis_pct").unwrap().as_deref(),
        Some("0")
    );
    assert_eq!(st.config_get("smoothfs_worker_count").unwrap(), None);
}

/// S22.2/A5 for the daemon: many pools discovered at once, with
/// concurrent lookups, all registered exactly once.
#[test]
fn concurrent_discovery_registers_each_pool_once() {
    let pools: Vec<FakeDp> = (0..6).map(|i| FakeDp::new(&format!("p{i}"))).collect();
    for (i, p) in pools.iter().enumerate() {
        p.add(oid(i as u32 + 1), "f", 0);
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    let cp = ControlPlane::start(daemon_opts(
        &db,
        pools.iter().map(|p| p.socket.clone()).collect(),
    ))
    .unwrap();
    let lookups = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            let lookups = Arc::clone(&lookups);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let st = Store::open(&db).unwrap();
                while !stop.load(Ordering::SeqCst) {
                    let _ = st.pools().unwrap();
                    lookups.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for p in &pools {
        wait_ready(&cp, p.uuid);
    }
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    assert!(lookups.load(Ordering::Relaxed) > 0);
    let st = Store::open(&db).unwrap();
    assert_eq!(st.pools().unwrap().len(), 6);
    cp.stop();
}
