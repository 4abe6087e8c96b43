//! The real client against a tiny SOCK_SEQPACKET server running in a
//! thread on a socket in a temporary directory (no mocks of the client).
//! Covers request/reply and seq matching, error replies, timeouts, the
//! event stream (S20/A7 over a socket) and closing (S20/A5, S20.8/2).

mod common;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::{OID, POOL, pool_uuid};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use smoothfs_uapi::Error;
use smoothfs_uapi::client::{Client, EventStream, default_socket_path};
use smoothfs_uapi::codec::{AttrBuf, MessageBuilder, decode_request, encode_message};
use smoothfs_uapi::event::{Event, MountReady, MoveState, StatusItem, decode_list};
use smoothfs_uapi::ids::{
    Attr, Command, EVENT_MASK_ALL, EventId, Flags, MovementState, PROTOCOL_VERSION,
};

struct Server {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn send(fd: &OwnedFd, bytes: &[u8]) {
    let _ = rustix::net::send(fd, bytes, SendFlags::NOSIGNAL);
}

fn move_state(seq: u32, state: MovementState, extra_attr_200: bool) -> Vec<u8> {
    let mut m = MessageBuilder::event(EventId::MoveState, seq);
    m.put_bytes(Attr::PoolUuid, &POOL);
    if extra_attr_200 {
        m.put_raw(200, b"from the future");
    }
    m.put_bytes(Attr::ObjectId, &OID)
        .put_u8(Attr::MovementState, state.number())
        .put_u64(Attr::TransactionSeq, 42)
        .put_u8(Attr::CurrentTier, 0)
        .put_u8(Attr::IntendedTier, 1);
    m.finish().unwrap()
}

/// Answers like a data plane would, with a few scripted misbehaviours:
/// QUIESCE first sends a reply with a wrong seq, RECONCILE is never
/// answered, SUBSCRIBE is followed by a fixed event script.
fn serve(conn: OwnedFd) {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match rustix::net::recv(&conn, &mut buf[..], RecvFlags::empty()) {
            Ok((_, 0)) | Err(_) => return,
            Ok((_, n)) => n,
        };
        let req = match decode_request(&buf[..n]) {
            Ok(r) => r,
            Err(e) => {
                send(&conn, &e.to_reply());
                continue;
            }
        };
        match req.command {
            Command::Status => {
                let mut m = req.reply();
                m.put_list(Attr::StatusItems, [("full_pct", "98")], |w, (n, v)| {
                    w.put_str(Attr::Name, n).put_str(Attr::Value, v);
                });
                send(&conn, &m.finish().unwrap());
            }
            Command::Inspect => {
                send(
                    &conn,
                    &req.error_reply(libc::ENOENT, "no object with that OID"),
                );
            }
            Command::Quiesce => {
                let stale = MessageBuilder::reply(Command::Quiesce, req.seq().wrapping_add(1000));
                send(&conn, &stale.finish().unwrap());
                send(&conn, &req.reply().finish().unwrap());
            }
            Command::Reconcile => {}
            Command::Subscribe => {
                let mask = req
                    .attrs
                    .get_u64(Attr::EventMask)
                    .unwrap()
                    .unwrap_or(u64::MAX);
                let mut m = req.reply();
                m.put_u32(Attr::ProtocolVersion, u32::from(PROTOCOL_VERSION));
                send(&conn, &m.finish().unwrap());
                if mask == 0 {
                    // Used by the close tests: subscribed, then silence.
                    continue;
                }
                let ready = Event::MountReady(MountReady {
                    pool_uuid: pool_uuid(),
                    pool_name: "pool-a".into(),
                    fsid: 1,
                    any_spill_since_mount: true,
                    tiers: vec![],
                    protocol_version: 1,
                    journal_seq: 0,
                });
                send(&conn, &ready.encode(1, false).unwrap());
                // S20/A7: event id 99 (with LOSS), then attribute 200 in
                // a MOVE_STATE.
                let unknown = encode_message(99, Flags::EVENT | Flags::LOSS, 2, &AttrBuf::new());
                send(&conn, &unknown.unwrap());
                send(&conn, &move_state(3, MovementState::PlanAccepted, true));
                // A heat blob of 57 bytes: an error for that event only.
                let mut bad = MessageBuilder::event(EventId::HeatSample, 4);
                bad.put_bytes(Attr::PoolUuid, &POOL)
                    .put_bytes(Attr::HeatSampleBlob, &[0u8; 57]);
                send(&conn, &bad.finish().unwrap());
                send(&conn, &move_state(5, MovementState::Switched, false));
            }
            Command::TierDown => {
                // The peer goes away mid-request.
                return;
            }
            _ => send(
                &conn,
                &req.error_reply(libc::ENOSYS, "not in this test server"),
            ),
        }
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.sock", pool_uuid()));
    let listener = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    rustix::net::bind(&listener, &SocketAddrUnix::new(&path).unwrap()).unwrap();
    rustix::net::listen(&listener, 16).unwrap();
    thread::spawn(move || {
        while let Ok(conn) = rustix::net::accept(&listener) {
            thread::spawn(move || serve(conn));
        }
    });
    Server { _dir: dir, path }
}

fn connect(path: &Path) -> Client {
    Client::connect(path).unwrap()
}

#[test]
fn default_socket_path_is_run_smoothfs_uuid_sock() {
    assert_eq!(
        default_socket_path(&pool_uuid()),
        PathBuf::from("/run/smoothfs/00112233-4455-6677-8899-aabbccddeeff.sock")
    );
}

#[test]
fn request_gets_its_reply() {
    let server = start_server();
    let mut client = connect(&server.path);
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::PoolUuid, &POOL);
    for _ in 0..3 {
        let reply = client.request(Command::Status, &a).unwrap();
        assert_eq!(reply.header().id, Command::Status.number());
        let items = decode_list(&reply.attrs(), Attr::StatusItems, StatusItem::decode).unwrap();
        assert_eq!(items[0].name, "full_pct");
        assert_eq!(items[0].value, "98");
    }
}

#[test]
fn error_reply_carries_errno_and_message() {
    let server = start_server();
    let mut client = connect(&server.path);
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::PoolUuid, &POOL)
        .put_bytes(Attr::ObjectId, &OID);
    match client.request(Command::Inspect, &a) {
        Err(Error::Remote { errno, message }) => {
            assert_eq!(errno, libc::ENOENT);
            assert_eq!(message, "no object with that OID");
        }
        other => panic!("expected ENOENT, got {other:?}"),
    }
    let err = client.request(Command::Inspect, &a).unwrap_err();
    assert_eq!(err.errno(), libc::ENOENT);
    assert!(err.to_string().starts_with("ENOENT: "), "{err}");
}

#[test]
fn server_refusal_of_a_malformed_request_reaches_the_client() {
    let server = start_server();
    let mut client = connect(&server.path);
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::TransactionSeq, &[1, 2, 3]);
    let err = client.request(Command::MovePlan, &a).unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    // The connection still works afterwards.
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::PoolUuid, &POOL);
    client.request(Command::Status, &a).unwrap();
}

#[test]
fn reply_with_another_seq_is_skipped() {
    let server = start_server();
    let mut client = connect(&server.path);
    let reply = client.request(Command::Quiesce, &AttrBuf::new()).unwrap();
    // The stale reply came first; the client must have waited for ours.
    let reply2 = client.request(Command::Quiesce, &AttrBuf::new()).unwrap();
    assert_eq!(reply2.header().seq, reply.header().seq + 1);
}

#[test]
fn unanswered_request_times_out_and_the_next_one_works() {
    let server = start_server();
    let mut client = connect(&server.path);
    client.set_timeout(Duration::from_millis(300));
    let start = Instant::now();
    let err = client
        .request(Command::Reconcile, &AttrBuf::new())
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert_eq!(err.errno(), libc::ETIMEDOUT);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(start.elapsed() < Duration::from_secs(5));
    client.request(Command::Status, &AttrBuf::new()).unwrap();
}

#[test]
fn default_timeout_is_60_seconds() {
    let server = start_server();
    let client = connect(&server.path);
    assert_eq!(client.timeout(), Duration::from_secs(60));
}

#[test]
fn peer_going_away_is_closed() {
    let server = start_server();
    let mut client = connect(&server.path);
    let err = client
        .request(Command::TierDown, &AttrBuf::new())
        .unwrap_err();
    assert!(matches!(err, Error::Closed), "{err:?}");
}

#[test]
fn connecting_to_a_missing_socket_fails_with_enoent() {
    let dir = tempfile::tempdir().unwrap();
    let err = Client::connect(dir.path().join("nope.sock")).unwrap_err();
    assert_eq!(err.errno(), libc::ENOENT);
    assert!(err.to_string().contains("nope.sock"), "{err}");
}

#[test]
fn event_stream_starts_with_mount_ready_and_skips_what_it_does_not_know() {
    let server = start_server();
    let client = connect(&server.path);
    let mut events = client.subscribe(EVENT_MASK_ALL).unwrap();
    assert_eq!(events.protocol_version(), 1);

    let first = events.recv().unwrap();
    let Event::MountReady(m) = first.event else {
        panic!("first event must be MOUNT_READY, got {first:?}");
    };
    assert_eq!(m.pool_name, "pool-a");
    assert!(m.any_spill_since_mount);

    // S20/A7: id 99 is skipped (its LOSS carried forward), attribute 200
    // inside MOVE_STATE is ignored.
    let second = events.recv().unwrap();
    assert_eq!(second.seq, 3);
    assert!(second.loss, "LOSS of the skipped unknown event is kept");
    assert_eq!(
        second.event,
        Event::MoveState(MoveState {
            pool_uuid: pool_uuid(),
            oid: OID,
            movement_state: MovementState::PlanAccepted,
            transaction_seq: 42,
            current_tier: 0,
            intended_tier: 1,
            failure_reason: None,
        })
    );

    // A bad heat blob is an error for that event, not for the stream.
    let err = events.recv().unwrap_err();
    assert!(matches!(err, Error::Wire(_)), "{err:?}");
    assert_eq!(err.errno(), libc::EINVAL);

    let fourth = events.recv().unwrap();
    assert_eq!(fourth.seq, 5);
    assert!(!fourth.loss);
    let Event::MoveState(s) = fourth.event else {
        panic!("{fourth:?}")
    };
    assert_eq!(s.movement_state, MovementState::Switched);

    let err = events.recv_timeout(Duration::from_millis(200)).unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
}

#[test]
fn close_unblocks_a_pending_event_receive_within_5s() {
    // S20/A5, S20.8/2.
    let server = start_server();
    let mut events = EventStream::subscribe(&server.path, 0, Duration::from_secs(5)).unwrap();
    let closer = events.closer();
    let receiver = thread::spawn(move || {
        let start = Instant::now();
        let result = events.recv();
        (result, start.elapsed())
    });
    thread::sleep(Duration::from_millis(300));
    let closed_at = Instant::now();
    closer.clone().close();
    let (result, _) = receiver.join().unwrap();
    let waited = closed_at.elapsed();
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    assert!(
        waited < Duration::from_secs(5),
        "recv returned {waited:?} after close"
    );
    assert!(closer.is_closed());
    closer.close(); // idempotent
}

#[test]
fn close_unblocks_a_pending_request_within_5s() {
    let server = start_server();
    let mut client = connect(&server.path);
    let closer = client.closer();
    let requester = thread::spawn(move || client.request(Command::Reconcile, &AttrBuf::new()));
    thread::sleep(Duration::from_millis(300));
    let closed_at = Instant::now();
    closer.close();
    let result = requester.join().unwrap();
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    assert!(closed_at.elapsed() < Duration::from_secs(5));
}

#[test]
fn requests_after_close_fail_with_closed() {
    let server = start_server();
    let mut client = connect(&server.path);
    client.closer().close();
    let err = client
        .request(Command::Status, &AttrBuf::new())
        .unwrap_err();
    assert!(matches!(err, Error::Closed), "{err:?}");
}
