//! The blocking control client (S20.8): request/reply on one connection and
//! an event stream on another, over the pool's SOCK_SEQPACKET socket.
//!
//! Owns: connecting, seq numbering, matching replies to requests, timeouts,
//! and closing. Must never block without bound once closed: every wait is a
//! `poll` of at most [`POLL_TICK`] that rechecks the closed flag, and
//! [`Closer::close`] also shuts the socket down, so a pending receive ends
//! within one tick (S20.8/2 asks for 5 s).
//!
//! Invariant: a close handle and its connection share one `Arc<OwnedFd>`,
//! so the descriptor number cannot be reused by an unrelated open while a
//! closer still refers to it; `shutdown(2)` rather than `close(2)` is what
//! wakes the reader.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, Shutdown, SocketAddrUnix, SocketFlags, SocketType,
};
use uuid::Uuid;

use crate::codec::{AttrBuf, Attrs, Header, MessageBuilder, decode_reply, encode_message};
use crate::error::{Error, Result, WireError};
use crate::event::{Event, ReceivedEvent, decode_event};
use crate::ids::{Attr, Command, EVENT_MASK_ALL, Flags, HEADER_LEN, MAX_MESSAGE_LEN};

/// Where pool sockets live by default (S20.1/1).
pub const DEFAULT_SOCKET_DIR: &str = "/run/smoothfs";
/// How long a request waits for its reply unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest single wait before the closed flag is checked again.
pub const POLL_TICK: Duration = Duration::from_millis(250);

/// `/run/smoothfs/<uuid>.sock`.
pub fn default_socket_path(pool_uuid: &Uuid) -> PathBuf {
    Path::new(DEFAULT_SOCKET_DIR).join(format!("{}.sock", pool_uuid.hyphenated()))
}

/// A handle that closes a connection from another thread. Cloneable; all
/// clones close the same connection.
#[derive(Clone, Debug)]
pub struct Closer {
    fd: Arc<OwnedFd>,
    closed: Arc<AtomicBool>,
}

impl Closer {
    /// Close the connection: a blocked or later receive returns
    /// [`Error::Closed`]. Idempotent.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // ENOTCONN after the peer left is fine: the flag alone suffices then.
        let _ = rustix::net::shutdown(&*self.fd, Shutdown::Both);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// One SOCK_SEQPACKET connection with a receive buffer large enough for
/// the largest legal message.
#[derive(Debug)]
struct Conn {
    fd: Arc<OwnedFd>,
    closed: Arc<AtomicBool>,
    buf: Vec<u8>,
}

impl Conn {
    fn connect(path: &Path) -> Result<Conn> {
        let ctx = || format!("connect {}", path.display());
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| Error::io(ctx(), e.into()))?;
        let addr = SocketAddrUnix::new(path).map_err(|e| Error::io(ctx(), e.into()))?;
        rustix::net::connect(&fd, &addr).map_err(|e| Error::io(ctx(), e.into()))?;
        Ok(Conn {
            fd: Arc::new(fd),
            closed: Arc::new(AtomicBool::new(false)),
            // One byte more than the limit, so an oversized message is seen
            // as such even without MSG_TRUNC support.
            buf: vec![0u8; MAX_MESSAGE_LEN + 1],
        })
    }

    fn closer(&self) -> Closer {
        Closer {
            fd: Arc::clone(&self.fd),
            closed: Arc::clone(&self.closed),
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn send(&self, msg: &[u8]) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        match rustix::net::send(&*self.fd, msg, SendFlags::NOSIGNAL) {
            Ok(n) if n == msg.len() => Ok(()),
            Ok(n) => Err(Error::io(
                "send",
                std::io::Error::other(format!("short send: {n} of {} bytes", msg.len())),
            )),
            Err(rustix::io::Errno::PIPE) | Err(rustix::io::Errno::CONNRESET) => Err(Error::Closed),
            Err(e) => Err(Error::io("send", e.into())),
        }
    }

    /// Wait for one datagram until `deadline` (None: forever, in ticks).
    /// Returns its length; the bytes are in `self.buf`.
    fn recv(&mut self, deadline: Option<Instant>) -> Result<usize> {
        loop {
            if self.is_closed() {
                return Err(Error::Closed);
            }
            let mut wait = POLL_TICK;
            if let Some(deadline) = deadline {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::Timeout(Duration::ZERO));
                }
                wait = wait.min(deadline - now);
            }
            let timeout = Timespec {
                tv_sec: wait.as_secs() as _,
                tv_nsec: wait.subsec_nanos() as _,
            };
            let mut fds = [PollFd::new(&*self.fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Error::io("poll", e.into())),
            }
            if self.is_closed() {
                return Err(Error::Closed);
            }
            let flags = RecvFlags::DONTWAIT | RecvFlags::TRUNC;
            match rustix::net::recv(&*self.fd, &mut self.buf[..], flags) {
                Ok((_, 0)) => {
                    // EOF (peer gone or shut down); a zero-length datagram
                    // is not a legal message either.
                    return Err(Error::Closed);
                }
                Ok((_, n)) if n > MAX_MESSAGE_LEN => {
                    return Err(WireError::new(
                        libc::EMSGSIZE,
                        format!("received a {n}-byte message; at most {MAX_MESSAGE_LEN} allowed"),
                    )
                    .into());
                }
                Ok((_, n)) => return Ok(n),
                Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::CONNRESET) => return Err(Error::Closed),
                Err(e) => return Err(Error::io("recv", e.into())),
            }
        }
    }

    fn message(&self, len: usize) -> &[u8] {
        self.buf.get(..len).unwrap_or(&[])
    }
}

/// A successful reply, owning its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    header: Header,
    buf: Vec<u8>,
}

impl Reply {
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The reply's attributes (already schema-checked).
    pub fn attrs(&self) -> Attrs<'_> {
        Attrs::parse(self.buf.get(HEADER_LEN..).unwrap_or(&[])).unwrap_or(Attrs::EMPTY)
    }

    /// The whole reply message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// A blocking request/reply client on one connection. Requests are
/// answered in order (S20.1/4); a reply whose seq does not match (a late
/// answer to a request that timed out) is skipped.
#[derive(Debug)]
pub struct Client {
    conn: Conn,
    path: PathBuf,
    next_seq: u32,
    timeout: Duration,
}

impl Client {
    /// Connect to a pool socket.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client> {
        let path = path.as_ref().to_path_buf();
        Ok(Client {
            conn: Conn::connect(&path)?,
            path,
            next_seq: 1,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Connect to `/run/smoothfs/<uuid>.sock`.
    pub fn connect_pool(pool_uuid: &Uuid) -> Result<Client> {
        Client::connect(default_socket_path(pool_uuid))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// A handle that closes this client's connection from another thread.
    pub fn closer(&self) -> Closer {
        self.conn.closer()
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        seq
    }

    /// Send `cmd` with `attrs` and wait for its reply. An error reply
    /// becomes [`Error::Remote`] with its errno and message.
    pub fn request(&mut self, cmd: Command, attrs: &AttrBuf) -> Result<Reply> {
        let seq = self.take_seq();
        let msg = encode_message(cmd.number(), Flags::REQUEST, seq, attrs)?;
        self.conn.send(&msg)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let len = match self.conn.recv(Some(deadline)) {
                Err(Error::Timeout(_)) => return Err(Error::Timeout(self.timeout)),
                other => other?,
            };
            let bytes = self.conn.message(len);
            let Ok(header) = Header::peek(bytes) else {
                continue;
            };
            if header.seq != seq || header.flags.contains(Flags::EVENT) {
                continue;
            }
            decode_reply(bytes)?;
            return Ok(Reply {
                header,
                buf: bytes.to_vec(),
            });
        }
    }

    /// Open a second connection to the same socket and subscribe to the
    /// events selected by `event_mask` (bit i = event id i;
    /// [`EVENT_MASK_ALL`] for all). The first event is MOUNT_READY.
    pub fn subscribe(&self, event_mask: u64) -> Result<EventStream> {
        EventStream::subscribe(&self.path, event_mask, self.timeout)
    }
}

/// A subscription: a connection that carries only events (S20.5).
#[derive(Debug)]
pub struct EventStream {
    conn: Conn,
    protocol_version: u32,
    /// LOSS seen on a skipped (unknown) event, carried to the next one.
    pending_loss: bool,
}

impl EventStream {
    /// Connect to `path`, send SUBSCRIBE and wait for its reply.
    pub fn subscribe(
        path: impl AsRef<Path>,
        event_mask: u64,
        timeout: Duration,
    ) -> Result<EventStream> {
        let mut conn = Conn::connect(path.as_ref())?;
        let seq = 1;
        let mut m = MessageBuilder::request(Command::Subscribe, seq);
        if event_mask != EVENT_MASK_ALL {
            m.put_u64(Attr::EventMask, event_mask);
        }
        conn.send(&m.finish()?)?;
        let deadline = Instant::now() + timeout;
        loop {
            let len = match conn.recv(Some(deadline)) {
                Err(Error::Timeout(_)) => return Err(Error::Timeout(timeout)),
                other => other?,
            };
            let bytes = conn.message(len);
            let Ok(header) = Header::peek(bytes) else {
                continue;
            };
            if header.seq != seq || header.flags.contains(Flags::EVENT) {
                continue;
            }
            let reply = decode_reply(bytes)?;
            let protocol_version = reply.attrs.get_u32(Attr::ProtocolVersion)?.unwrap_or(1);
            return Ok(EventStream {
                conn,
                protocol_version,
                pending_loss: false,
            });
        }
    }

    /// PROTOCOL_VERSION from the SUBSCRIBE reply.
    pub fn protocol_version(&self) -> u32 {
        self.protocol_version
    }

    /// A handle that makes a blocked [`EventStream::recv`] return
    /// [`Error::Closed`].
    pub fn closer(&self) -> Closer {
        self.conn.closer()
    }

    /// Wait for the next known event. Unknown event ids are skipped.
    /// `Err(Error::Wire(_))` means that one event was malformed and the
    /// stream is still usable; `Err(Error::Closed)` and `Err(Error::Io{..})`
    /// end it.
    pub fn recv(&mut self) -> Result<ReceivedEvent> {
        self.recv_until(None)
    }

    /// Like [`EventStream::recv`], but gives up with [`Error::Timeout`]
    /// after `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<ReceivedEvent> {
        match self.recv_until(Some(Instant::now() + timeout)) {
            Err(Error::Timeout(_)) => Err(Error::Timeout(timeout)),
            other => other,
        }
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<ReceivedEvent> {
        loop {
            let len = self.conn.recv(deadline)?;
            let mut ev = decode_event(self.conn.message(len))?;
            if let Event::Unknown(_) = ev.event {
                self.pending_loss |= ev.loss;
                continue;
            }
            ev.loss |= std::mem::take(&mut self.pending_loss);
            return Ok(ev);
        }
    }
}
