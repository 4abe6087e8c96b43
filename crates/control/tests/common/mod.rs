//! A fake data plane for worker tests: a SEQPACKET control socket that
//! answers STATUS, INSPECT, MOVE_PLAN, MOVE_CUTOVER, MOVE_CLEANUP,
//! MOVE_ABORT and REVOKE_MAPPINGS for one object whose lower files live in
//! two temp-dir tiers. It follows the S9.2 transitions and S11/S12 gates the
//! worker depends on, closely enough to check the worker's side of the
//! protocol; the real data plane is tested by the mount tests.

#![allow(dead_code)]

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use smoothfs_uapi::codec::{Request, decode_request};
use smoothfs_uapi::event::{StatusItem, TierInfo};
use smoothfs_uapi::ids::{Attr, Command, MovementState, TierCaps, TierState};
use uuid::Uuid;

pub const OID: [u8; 16] = [0x5a; 16];

/// The one object and the knobs tests turn.
#[derive(Debug)]
pub struct Obj {
    pub current_tier: u8,
    pub intended_tier: u8,
    pub state: MovementState,
    pub seq: u64,
    pub write_seq: u64,
    pub generation: u32,
    pub rel_path: PathBuf,
    pub pin_state: u8,
    pub nlink: u32,
    pub passthrough: u32,
    pub range_staged: bool,
    pub staging: Option<PathBuf>,
    /// Lower of the source while switched (removed by cleanup).
    pub old_lower: Option<PathBuf>,
    /// Bump write_seq when the n-th INSPECT arrives (1-based).
    pub bump_write_seq_at_inspect: Option<usize>,
    /// Answer MOVE_CUTOVER with this errno (state handled as the gates do).
    pub cutover_errno: Option<i32>,
    /// Refuse MOVE_PLAN with this errno.
    pub plan_errno: Option<i32>,
    pub inspects: usize,
    /// Every command received, in order.
    pub log: Vec<Command>,
    pub abort_reasons: Vec<String>,
    /// Every command received plus what test doubles add (LUN tests), in
    /// order: `PIN_SET 5` / `PIN_SET 0` carry the pin value.
    pub trace: Vec<String>,
    /// Answer PIN_SET with this errno.
    pub pin_set_errno: Option<i32>,
    /// Accept PIN_SET but change nothing while the object is on this tier.
    pub pin_set_ignored_on_tier: Option<u8>,
}

pub struct FakePool {
    pub dir: tempfile::TempDir,
    pub uuid: Uuid,
    pub socket: PathBuf,
    pub tiers: Vec<PathBuf>,
    pub obj: Arc<Mutex<Obj>>,
}

impl FakePool {
    /// Two tiers; the object `rel_path` with `data` on tier 0.
    pub fn new(rel_path: &str, data: &[u8]) -> FakePool {
        let dir = tempfile::tempdir().unwrap();
        let tiers: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("t{i}"))).collect();
        for t in &tiers {
            fs::create_dir_all(t.join(".smoothfs/incoming")).unwrap();
        }
        let lower = tiers[0].join(rel_path);
        fs::create_dir_all(lower.parent().unwrap()).unwrap();
        fs::write(&lower, data).unwrap();
        let obj = Arc::new(Mutex::new(Obj {
            current_tier: 0,
            intended_tier: 0,
            state: MovementState::Placed,
            seq: 0,
            write_seq: 1,
            generation: 0,
            rel_path: PathBuf::from(rel_path),
            pin_state: 0,
            nlink: 1,
            passthrough: 0,
            range_staged: false,
            staging: None,
            old_lower: None,
            bump_write_seq_at_inspect: None,
            cutover_errno: None,
            plan_errno: None,
            inspects: 0,
            log: Vec::new(),
            abort_reasons: Vec::new(),
            trace: Vec::new(),
            pin_set_errno: None,
            pin_set_ignored_on_tier: None,
        }));
        let socket = dir.path().join("pool.sock");
        let listener = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::bind(&listener, &SocketAddrUnix::new(&socket).unwrap()).unwrap();
        rustix::net::listen(&listener, 8).unwrap();
        let uuid = Uuid::new_v4();
        let server = Server {
            uuid,
            tiers: tiers.clone(),
            obj: Arc::clone(&obj),
        };
        // Lives until the test process ends.
        std::thread::spawn(move || {
            while let Ok(conn) = rustix::net::accept(&listener) {
                server.serve(conn);
            }
        });
        FakePool {
            dir,
            uuid,
            socket,
            tiers,
            obj,
        }
    }

    pub fn lower(&self, tier: usize) -> PathBuf {
        self.tiers[tier].join(&self.obj.lock().unwrap().rel_path)
    }

    pub fn incoming(&self, tier: usize) -> Vec<PathBuf> {
        fs::read_dir(self.tiers[tier].join(".smoothfs/incoming"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    pub fn client(&self) -> smoothfs_uapi::client::Client {
        smoothfs_uapi::client::Client::connect(&self.socket).unwrap()
    }

    pub fn trace(&self) -> Vec<String> {
        self.obj.lock().unwrap().trace.clone()
    }

    pub fn log(&self) -> Vec<&'static str> {
        self.obj
            .lock()
            .unwrap()
            .log
            .iter()
            .map(|c| c.as_str())
            .collect()
    }
}

struct Server {
    uuid: Uuid,
    tiers: Vec<PathBuf>,
    obj: Arc<Mutex<Obj>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Server {
    fn serve(&self, conn: OwnedFd) {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match rustix::net::recv(&conn, &mut buf[..], RecvFlags::empty()) {
                Ok((_, 0)) | Err(_) => return,
                Ok((_, n)) => n,
            };
            let reply = match decode_request(&buf[..n]) {
                Ok(req) => self.handle(&req),
                Err(e) => e.to_reply(),
            };
            if rustix::net::send(&conn, &reply, SendFlags::NOSIGNAL).is_err() {
                return;
            }
        }
    }

    fn handle(&self, req: &Request<'_>) -> Vec<u8> {
        let mut o = self.obj.lock().unwrap();
        o.log.push(req.command);
        let a = &req.attrs;
        let entry = match (req.command, a.get_u8(Attr::PinState).ok().flatten()) {
            (Command::PinSet, Some(p)) => format!("PIN_SET {p}"),
            (c, _) => c.as_str().to_string(),
        };
        o.trace.push(entry);
        if a.get_id16(Attr::PoolUuid).ok().flatten() != Some(*self.uuid.as_bytes()) {
            return req.error_reply(libc::ENODEV, "wrong pool");
        }
        let lower = self.tiers[o.current_tier as usize].join(&o.rel_path);
        let mut r = req.reply();
        match req.command {
            Command::Status => {
                let caps = TierCaps(0xffff);
                r.put_list(Attr::Tiers, self.tiers.iter().enumerate(), |w, (i, t)| {
                    TierInfo {
                        rank: i as u8,
                        caps,
                        tier_path: t.clone(),
                        tier_id: format!("tier-{i}"),
                        state: TierState::Ok,
                        passthrough: true,
                    }
                    .encode(w)
                });
                r.put_list(
                    Attr::StatusItems,
                    [("write_staging_full_pct", "100")],
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
                o.inspects += 1;
                if o.bump_write_seq_at_inspect == Some(o.inspects) {
                    o.write_seq += 1;
                }
                let m = fs::symlink_metadata(&lower).ok();
                r.put_bytes(Attr::ObjectId, &OID)
                    .put_u8(Attr::ObjectKind, 1)
                    .put_u64(Attr::Inode, 42)
                    .put_u8(Attr::CurrentTier, o.current_tier)
                    .put_u8(Attr::IntendedTier, o.intended_tier)
                    .put_u8(Attr::MovementState, o.state.number())
                    .put_u8(Attr::PinState, o.pin_state)
                    .put_u8(Attr::PolicyPin, 0)
                    .put_u32(Attr::Generation, o.generation)
                    .put_u64(Attr::TransactionSeq, o.seq)
                    .put_u64(Attr::WriteSeq, o.write_seq)
                    .put_u8(Attr::RangeStaged, u8::from(o.range_staged))
                    .put_path(Attr::RelPath, &o.rel_path)
                    .put_path(Attr::TierPath, &self.tiers[o.current_tier as usize])
                    .put_path(Attr::LowerPath, &lower)
                    .put_u64(Attr::SizeBytes, m.as_ref().map_or(0, |m| m.size()))
                    .put_u64(Attr::MtimeNs, 0)
                    .put_u32(Attr::Nlink, o.nlink)
                    .put_u32(Attr::PassthroughHandles, o.passthrough)
                    .put_u32(Attr::MediatedHandles, 0);
            }
            Command::MovePlan => {
                let dest = a.require_u8(Attr::IntendedTier).unwrap();
                let seq = a.require_u64(Attr::TransactionSeq).unwrap();
                let force = a.get_u8(Attr::Force).ok().flatten() == Some(1);
                if let Some(e) = o.plan_errno {
                    return req.error_reply(e, "plan refused by test");
                }
                if dest as usize >= self.tiers.len() {
                    return req.error_reply(libc::EINVAL, "no such tier");
                }
                if dest == o.current_tier {
                    return req.error_reply(libc::EALREADY, "already there");
                }
                if o.state != MovementState::Placed {
                    return req.error_reply(libc::EBUSY, "not placed");
                }
                if o.pin_state == 4 && !force {
                    return req.error_reply(libc::EBUSY, "lease");
                }
                let staging = self.tiers[dest as usize]
                    .join(".smoothfs/incoming")
                    .join(format!("{}-{seq}", hex(&OID)));
                o.state = MovementState::PlanAccepted;
                o.seq = seq;
                o.intended_tier = dest;
                o.staging = Some(staging.clone());
                r.put_path(Attr::StagingPath, &staging)
                    .put_path(Attr::LowerPath, &lower)
                    .put_u8(Attr::MovementState, o.state.number());
            }
            Command::MoveCutover => {
                let seq = a.require_u64(Attr::TransactionSeq).unwrap();
                let ws = a.get_u64(Attr::WriteSeq).unwrap();
                if o.state != MovementState::PlanAccepted {
                    return req.error_reply(libc::EBUSY, "not plan_accepted");
                }
                if seq != o.seq {
                    return req.error_reply(libc::ESTALE, "seq");
                }
                if let Some(e) = o.cutover_errno {
                    if e != libc::EBUSY {
                        fail_plan(&mut o);
                    }
                    return req.error_reply(e, "cutover refused by test");
                }
                if ws.is_some_and(|w| w != o.write_seq) {
                    fail_plan(&mut o);
                    return req.error_reply(libc::ESTALE, "write_seq changed");
                }
                let dest = o.intended_tier;
                let target = self.tiers[dest as usize].join(&o.rel_path);
                fs::create_dir_all(target.parent().unwrap()).unwrap();
                let Some(staging) = o.staging.take() else {
                    return req.error_reply(libc::ENOENT, "no staging");
                };
                if let Err(e) = fs::rename(&staging, &target) {
                    fail_plan(&mut o);
                    return req.error_reply(e.raw_os_error().unwrap_or(libc::EIO), "rename");
                }
                o.old_lower = Some(lower);
                o.current_tier = dest;
                o.generation += 1;
                o.state = MovementState::Switched;
                r.put_u32(Attr::Generation, o.generation)
                    .put_u8(Attr::CurrentTier, dest)
                    .put_path(Attr::LowerPath, &target);
            }
            Command::MoveCleanup => {
                if o.state != MovementState::Switched {
                    return req.error_reply(libc::EINVAL, "not switched");
                }
                let errno = match o.old_lower.take().map(fs::remove_file) {
                    Some(Err(e)) => e.raw_os_error().unwrap_or(libc::EIO) as u32,
                    _ => 0,
                };
                o.state = MovementState::Placed;
                o.seq = 0;
                o.intended_tier = o.current_tier;
                r.put_u8(Attr::MovementState, 0)
                    .put_u32(Attr::CleanupErrno, errno);
            }
            Command::MoveAbort => {
                let seq = a.require_u64(Attr::TransactionSeq).unwrap();
                let reason = a
                    .get_str(Attr::FailureReason)
                    .ok()
                    .flatten()
                    .unwrap_or("aborted")
                    .to_string();
                if o.state != MovementState::PlanAccepted {
                    return req.error_reply(libc::EINVAL, "no movement in flight");
                }
                if seq != o.seq {
                    return req.error_reply(libc::ESTALE, "seq");
                }
                o.abort_reasons.push(reason);
                fail_plan(&mut o);
                r.put_u8(Attr::MovementState, 0);
            }
            Command::PinSet => {
                if let Some(e) = o.pin_set_errno {
                    return req.error_reply(e, "pin set refused by test");
                }
                if let Some(p) = a.get_u8(Attr::PinState).ok().flatten()
                    && o.pin_set_ignored_on_tier != Some(o.current_tier)
                {
                    o.pin_state = p;
                }
                r.put_u8(Attr::PinState, o.pin_state)
                    .put_u8(Attr::PolicyPin, 0);
            }
            Command::RevokeMappings => {
                r.put_u32(Attr::PassthroughHandles, o.passthrough);
            }
            _ => return req.error_reply(libc::EOPNOTSUPP, "not in the fake"),
        }
        r.finish().unwrap()
    }
}

/// `failed` → `placed` on the source; the staging file is deleted.
fn fail_plan(o: &mut Obj) {
    if let Some(s) = o.staging.take() {
        let _ = fs::remove_file(s);
    }
    o.state = MovementState::Placed;
    o.seq = 0;
    o.intended_tier = o.current_tier;
}

pub fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}
