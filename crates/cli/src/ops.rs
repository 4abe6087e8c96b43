//! Operator commands that talk to a pool's control socket directly
//! (S26.6/3): `smoothfs status` (S1.7), `smoothfs inspect` (S20.4.1) and
//! `smoothfs events` (S26.5).
//!
//! Pools are found through their pool records, `/run/smoothfs/*.json`
//! (S1.6), which name the socket and the mountpoint. Exit status: 0
//! success, 1 usage error, 2 operation failed, with `smoothfs: ERRNO:
//! message` on stderr (S26.6/2).

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use smoothfs_uapi::Error as UapiError;
use smoothfs_uapi::client::{Client, EventStream};
use smoothfs_uapi::codec::{AttrBuf, Attrs};
use smoothfs_uapi::error::errno_name;
use smoothfs_uapi::event::{Event, StatusItem, TierInfo, decode_list};
use smoothfs_uapi::ids::{
    Attr, AttrType, Command, EVENT_MASK_ALL, EventId, MovementState, ObjectKind, PinState,
    PolicyPin, TierState,
};
use uuid::Uuid;

/// Where the data plane writes pool records (S1.6).
const RUN_DIR: &str = "/run/smoothfs";

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Pool name or UUID (required when several pools are mounted).
    #[arg(long)]
    pool: Option<String>,
    /// Print a JSON object (status item names as keys).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// A path inside a mounted pool, or an object id (32 hex digits).
    target: String,
    /// Pool name or UUID (for an object id).
    #[arg(long)]
    pool: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct EventsArgs {
    /// Pool name or UUID (required when several pools are mounted).
    #[arg(long)]
    pool: Option<String>,
    /// Also print heat samples, one line per heat record.
    #[arg(long)]
    heat: bool,
    /// Accepted for uniformity; the output is always JSON lines.
    #[arg(long)]
    json: bool,
}

/// A failed command: exit status and message.
pub(crate) struct Fail {
    pub(crate) code: u8,
    pub(crate) msg: String,
}

impl Fail {
    pub(crate) fn usage(msg: impl Into<String>) -> Fail {
        Fail {
            code: 1,
            msg: msg.into(),
        }
    }

    pub(crate) fn op(errno: i32, msg: impl std::fmt::Display) -> Fail {
        Fail {
            code: 2,
            msg: format!("{}: {msg}", errno_name(errno)),
        }
    }
}

impl From<UapiError> for Fail {
    fn from(e: UapiError) -> Fail {
        match &e {
            // Already "ERRNO: message".
            UapiError::Remote { .. } => Fail {
                code: 2,
                msg: e.to_string(),
            },
            _ => Fail::op(e.errno(), e),
        }
    }
}

pub(crate) fn finish(r: Result<(), Fail>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("smoothfs: {}", f.msg);
            ExitCode::from(f.code)
        }
    }
}

// ---------------------------------------------------------------------------
// Pool records
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub(crate) struct PoolRecord {
    pub(crate) name: String,
    pub(crate) uuid: Uuid,
    pub(crate) mountpoint: PathBuf,
    pub(crate) socket: PathBuf,
}

fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Every live pool record in `/run/smoothfs`, sorted by name.
fn pool_records() -> Vec<PoolRecord> {
    let Ok(dir) = std::fs::read_dir(RUN_DIR) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<Value>(&text) else {
            continue;
        };
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(name), Some(uuid), Some(mountpoint), Some(socket)) =
            (s("pool"), s("uuid"), s("mountpoint"), s("socket"))
        else {
            continue;
        };
        let Ok(uuid) = Uuid::parse_str(&uuid) else {
            continue;
        };
        if let Some(pid) = v.get("pid").and_then(Value::as_i64)
            && !pid_alive(pid)
        {
            continue;
        }
        out.push(PoolRecord {
            name,
            uuid,
            mountpoint: PathBuf::from(mountpoint),
            socket: PathBuf::from(socket),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The pool named by `sel` (name or UUID), or the only mounted pool.
pub(crate) fn select_pool(sel: Option<&str>) -> Result<PoolRecord, Fail> {
    let pools = pool_records();
    match sel {
        Some(s) => {
            let by_uuid = Uuid::parse_str(s).ok();
            pools
                .into_iter()
                .find(|p| p.name == s || Some(p.uuid) == by_uuid)
                .ok_or_else(|| Fail::op(libc::ENOENT, format!("no mounted pool '{s}'")))
        }
        None => match pools.len() {
            0 => Err(Fail::op(libc::ENOENT, "no smoothfs pool is mounted")),
            1 => Ok(pools.into_iter().next().unwrap_or_else(|| unreachable!())),
            _ => Err(Fail::usage(format!(
                "several pools are mounted ({}); choose one with --pool",
                pools
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
    }
}

pub(crate) fn pool_attrs(p: &PoolRecord) -> AttrBuf {
    let mut a = AttrBuf::new();
    a.put_bytes(Attr::PoolUuid, p.uuid.as_bytes());
    a
}

pub(crate) fn connect(p: &PoolRecord) -> Result<Client, Fail> {
    Ok(Client::connect(&p.socket)?)
}

// ---------------------------------------------------------------------------
// JSON rendering of attributes
// ---------------------------------------------------------------------------

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One attribute as JSON: OIDs in hex, states and pins by name (S26.5).
fn attr_value(attr: Attr, raw: &smoothfs_uapi::codec::RawAttr<'_>) -> Value {
    let u8v = || raw.as_u8().unwrap_or(0);
    match attr {
        Attr::ObjectId => json!(hex(raw.payload)),
        Attr::PoolUuid => match raw.as_id16() {
            Ok(b) => json!(Uuid::from_bytes(b).hyphenated().to_string()),
            Err(_) => json!(hex(raw.payload)),
        },
        Attr::MovementState => json!(MovementState::from_wire(u8v()).as_str()),
        Attr::PinState => json!(PinState::from_wire(u8v()).as_str()),
        Attr::PolicyPin => json!(PolicyPin::from_wire(u8v()).as_str()),
        Attr::ObjectKind => json!(ObjectKind::from_wire(u8v()).as_str()),
        Attr::TierState => json!(TierState::from_wire(u8v()).as_str()),
        Attr::Mediated
        | Attr::Passthrough
        | Attr::AnySpillSinceMount
        | Attr::RangeStaged
        | Attr::Force
        | Attr::HardlinkGroup => json!(u8v() != 0),
        Attr::Fsid => json!(format!("0x{:08x}", raw.as_u32().unwrap_or(0))),
        _ => match attr.attr_type() {
            AttrType::U8 => json!(u8v()),
            AttrType::U32 => json!(raw.as_u32().unwrap_or(0)),
            AttrType::U64 => json!(raw.as_u64().unwrap_or(0)),
            AttrType::String(_) => {
                json!(String::from_utf8_lossy(
                    raw.as_str_bytes().unwrap_or(raw.payload)
                ))
            }
            AttrType::NestedList => match raw.as_list() {
                Ok(list) => Value::Array(
                    list.map(|e| e.map_or(Value::Null, |a| Value::Object(attrs_json(&a))))
                        .collect(),
                ),
                Err(_) => Value::Null,
            },
            AttrType::Binary(_) | AttrType::BinaryMax(_) | AttrType::HeatBlob => {
                json!(hex(raw.payload))
            }
        },
    }
}

/// Every known attribute as `snake_case name → value`.
fn attrs_json(a: &Attrs<'_>) -> Map<String, Value> {
    let mut m = Map::new();
    for raw in a.iter() {
        let Some(attr) = raw.attr() else { continue };
        m.entry(attr.as_str().to_ascii_lowercase())
            .or_insert_with(|| attr_value(attr, &raw));
    }
    m
}

pub(crate) fn tier_json(t: &TierInfo) -> Value {
    json!({
        "tier_rank": t.rank,
        "tier_path": t.tier_path,
        "tier_id": t.tier_id,
        "tier_caps": t.caps.bits(),
        "tier_cap_names": t.caps.names(),
        "tier_state": t.state.as_str(),
        "passthrough": t.passthrough,
    })
}

pub(crate) fn write_out(s: &str) -> Result<(), Fail> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Fail::op(e.raw_os_error().unwrap_or(libc::EIO), e))
}

pub(crate) fn to_json_text(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into());
    s.push('\n');
    s
}

// ---------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------

pub fn status(a: StatusArgs) -> ExitCode {
    finish(run_status(&a))
}

fn run_status(a: &StatusArgs) -> Result<(), Fail> {
    let pool = select_pool(a.pool.as_deref())?;
    let mut c = connect(&pool)?;
    let reply = c.request(Command::Status, &pool_attrs(&pool))?;
    let attrs = reply.attrs();
    let items = decode_list(&attrs, Attr::StatusItems, StatusItem::decode)
        .map_err(|e| Fail::op(e.errno, e.message))?;
    let tiers = decode_list(&attrs, Attr::Tiers, TierInfo::decode)
        .map_err(|e| Fail::op(e.errno, e.message))?;
    if a.json {
        let mut m = Map::new();
        for i in &items {
            m.insert(i.name.clone(), status_value(&i.name, &i.value));
        }
        m.insert(
            "tier_list".into(),
            Value::Array(tiers.iter().map(tier_json).collect()),
        );
        return write_out(&to_json_text(&Value::Object(m)));
    }
    let width = items.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
    let mut s = format!(
        "pool {} ({}) on {}\n\n{:<width$}  VALUE\n",
        pool.name,
        pool.uuid,
        pool.mountpoint.display(),
        "NAME"
    );
    for i in &items {
        s.push_str(&format!("{:<width$}  {}\n", i.name, i.value));
    }
    s.push_str("\nRANK  STATE    PASSTHROUGH  CAPS    PATH\n");
    for t in &tiers {
        s.push_str(&format!(
            "{:<4}  {:<7}  {:<11}  0x{:04x}  {}\n",
            t.rank,
            t.state.as_str(),
            if t.passthrough { "yes" } else { "no" },
            t.caps.bits(),
            t.tier_path.display()
        ));
    }
    write_out(&s)
}

/// Decimal items become JSON numbers; masks, names and paths stay strings.
pub(crate) fn status_value(name: &str, value: &str) -> Value {
    let textual = matches!(name, "pool_name" | "pool_uuid" | "mediated_comm");
    if !textual
        && !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = value.parse::<u64>()
    {
        return json!(n);
    }
    json!(value)
}

// ---------------------------------------------------------------------------
// inspect
// ---------------------------------------------------------------------------

pub fn inspect(a: InspectArgs) -> ExitCode {
    finish(run_inspect(&a))
}

/// Parse 32 hex digits or the dashed 36-character form.
pub(crate) fn parse_oid(s: &str) -> Option<[u8; 16]> {
    let digits: String = s.chars().filter(|c| *c != '-').collect();
    if digits.len() != 32 || (s.len() != 32 && s.len() != 36) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The absolute path of `p` with its parent's symlinks resolved (the final
/// component itself is not followed, so a symlink is inspected as itself).
pub(crate) fn absolute(p: &Path) -> Result<PathBuf, Fail> {
    let io = |e: std::io::Error| {
        Fail::op(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("{}: {e}", p.display()),
        )
    };
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map_err(io)?.join(p)
    };
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) if name != "." && name != ".." => {
            std::fs::symlink_metadata(&abs).map_err(io)?;
            Ok(std::fs::canonicalize(parent).map_err(io)?.join(name))
        }
        _ => std::fs::canonicalize(&abs).map_err(io),
    }
}

/// The mounted pool that holds `path` (the one with the longest matching
/// mountpoint, among those `sel` names if given) and `path` relative to its
/// mountpoint (empty for the pool root).
pub(crate) fn pool_for_path(path: &Path, sel: Option<&str>) -> Result<(PoolRecord, PathBuf), Fail> {
    let abs = absolute(path)?;
    let mut pools = pool_records();
    if let Some(sel) = sel {
        let by_uuid = Uuid::parse_str(sel).ok();
        pools.retain(|p| p.name == *sel || Some(p.uuid) == by_uuid);
    }
    let pool = pools
        .into_iter()
        .filter(|p| abs.starts_with(&p.mountpoint))
        .max_by_key(|p| p.mountpoint.as_os_str().len())
        .ok_or_else(|| {
            Fail::op(
                libc::ENOENT,
                format!("{} is not inside a mounted smoothfs pool", abs.display()),
            )
        })?;
    let rel = abs
        .strip_prefix(&pool.mountpoint)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Ok((pool, rel))
}

fn run_inspect(a: &InspectArgs) -> Result<(), Fail> {
    let (pool, oid, rel): (PoolRecord, [u8; 16], Option<PathBuf>) =
        match parse_oid(&a.target).filter(|_| !Path::new(&a.target).exists()) {
            Some(oid) => (select_pool(a.pool.as_deref())?, oid, None),
            None => {
                let (pool, rel) = pool_for_path(Path::new(&a.target), a.pool.as_deref())?;
                if rel.as_os_str().is_empty() {
                    // The pool root: OID all zeros.
                    (pool, [0u8; 16], Some(rel))
                } else {
                    let mut c = connect(&pool)?;
                    let mut req = pool_attrs(&pool);
                    req.put_str_bytes(Attr::RelPath, rel.as_os_str().as_bytes());
                    let reply = c.request(Command::ResolvePath, &req)?;
                    let oid = reply
                        .attrs()
                        .require_id16(Attr::ObjectId)
                        .map_err(|e| Fail::op(e.errno, e.message))?;
                    (pool, oid, Some(rel))
                }
            }
        };
    let mut c = connect(&pool)?;
    let mut req = pool_attrs(&pool);
    req.put_bytes(Attr::ObjectId, &oid);
    let reply = c.request(Command::Inspect, &req)?;
    let mut m = attrs_json(&reply.attrs());
    m.insert("pool".into(), json!(pool.name));
    if let Some(rel) = rel
        && !m.contains_key("rel_path")
    {
        m.insert("rel_path".into(), json!(rel));
    }
    if a.json {
        return write_out(&to_json_text(&Value::Object(m)));
    }
    let width = m.keys().map(String::len).max().unwrap_or(4);
    let mut s = String::new();
    for (k, v) in &m {
        let text = match v {
            Value::String(t) => t.clone(),
            other => other.to_string(),
        };
        s.push_str(&format!("{k:<width$}  {text}\n"));
    }
    write_out(&s)
}

// ---------------------------------------------------------------------------
// events
// ---------------------------------------------------------------------------

pub fn events(a: EventsArgs) -> ExitCode {
    let _ = a.json;
    finish(run_events(&a))
}

/// RFC 3339 UTC with milliseconds.
pub(crate) fn rfc3339_ms(t: SystemTime) -> String {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The JSON lines for one event (several for a heat sample).
fn event_lines(pool: &str, ev: &Event, seq: u32, loss: bool) -> Vec<Map<String, Value>> {
    let mut base = Map::new();
    base.insert("ts".into(), json!(rfc3339_ms(SystemTime::now())));
    base.insert("pool".into(), json!(pool));
    base.insert("event".into(), json!(ev.name()));
    base.insert("seq".into(), json!(seq));
    if loss {
        base.insert("loss".into(), json!(true));
    }
    let with = |fields: Value| {
        let mut m = base.clone();
        if let Value::Object(f) = fields {
            m.extend(f);
        }
        m
    };
    match ev {
        Event::MountReady(e) => vec![with(json!({
            "pool_uuid": e.pool_uuid.hyphenated().to_string(),
            "pool_name": e.pool_name,
            "fsid": format!("0x{:08x}", e.fsid),
            "any_spill_since_mount": e.any_spill_since_mount,
            "tiers": e.tiers.iter().map(tier_json).collect::<Vec<_>>(),
            "protocol_version": e.protocol_version,
            "journal_seq": e.journal_seq,
        }))],
        Event::HeatSample(e) => e
            .records
            .iter()
            .map(|r| {
                with(json!({
                    "pool_uuid": e.pool_uuid.hyphenated().to_string(),
                    "object_id": hex(&r.oid),
                    "open_count_delta": r.open_count_delta,
                    "read_bytes_delta": r.read_bytes_delta,
                    "write_bytes_delta": r.write_bytes_delta,
                    "last_access_ns": r.last_access_ns,
                    "sample_window_ns": r.sample_window_ns,
                }))
            })
            .collect(),
        Event::MoveState(e) => {
            let mut m = with(json!({
                "pool_uuid": e.pool_uuid.hyphenated().to_string(),
                "object_id": hex(&e.oid),
                "movement_state": e.movement_state.as_str(),
                "transaction_seq": e.transaction_seq,
                "current_tier": e.current_tier,
                "intended_tier": e.intended_tier,
            }));
            if let Some(r) = &e.failure_reason {
                m.insert("failure_reason".into(), json!(r));
            }
            vec![m]
        }
        Event::TierFault(e) => vec![with(json!({
            "pool_uuid": e.pool_uuid.hyphenated().to_string(),
            "pool_name": e.pool_name,
            "fsid": format!("0x{:08x}", e.fsid),
            "any_spill_since_mount": e.any_spill_since_mount,
            "tier_rank": e.tier_rank,
            "tier_state": e.tier_state.as_str(),
            "fault_errno": e.fault_errno,
        }))],
        Event::Spill(e) => vec![with(json!({
            "pool_uuid": e.pool_uuid.hyphenated().to_string(),
            "any_spill_since_mount": e.any_spill_since_mount,
            "object_id": hex(&e.oid),
            "current_tier": e.first_tier,
            "intended_tier": e.landed_tier,
            "size_bytes": e.size_bytes,
            "rel_path": e.rel_path,
        }))],
        Event::TierResumed(e) => vec![with(json!({
            "pool_uuid": e.pool_uuid.hyphenated().to_string(),
            "tier_rank": e.tier_rank,
            "tier_state": e.tier_state.as_str(),
        }))],
        Event::ObjectRemoved(e) => vec![with(json!({
            "pool_uuid": e.pool_uuid.hyphenated().to_string(),
            "object_id": hex(&e.oid),
            "object_gen": e.object_gen,
        }))],
        Event::Unknown(_) => Vec::new(),
    }
}

fn run_events(a: &EventsArgs) -> Result<(), Fail> {
    let pool = select_pool(a.pool.as_deref())?;
    let mask = if a.heat {
        EVENT_MASK_ALL
    } else {
        EVENT_MASK_ALL & !EventId::HeatSample.mask_bit()
    };
    let mut stream =
        EventStream::subscribe(&pool.socket, mask, smoothfs_uapi::client::DEFAULT_TIMEOUT)?;
    loop {
        match stream.recv() {
            Ok(ev) => {
                for line in event_lines(&pool.name, &ev.event, ev.seq, ev.loss) {
                    let mut text =
                        serde_json::to_string(&Value::Object(line)).unwrap_or_else(|_| "{}".into());
                    text.push('\n');
                    write_out(&text)?;
                }
            }
            Err(UapiError::Closed) => {
                eprintln!("smoothfs: pool '{}' closed the event stream", pool.name);
                return Ok(());
            }
            Err(UapiError::Wire(w)) => {
                eprintln!("smoothfs: skipped a malformed event: {w}");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_forms() {
        assert_eq!(parse_oid(&"ab".repeat(16)), Some([0xab; 16]));
        assert_eq!(
            parse_oid("abababab-abab-abab-abab-abababababab"),
            Some([0xab; 16])
        );
        assert_eq!(parse_oid("abc"), None);
        assert_eq!(parse_oid(&"zz".repeat(16)), None);
    }

    #[test]
    fn status_values_are_typed() {
        assert_eq!(status_value("spill_creates_total", "3"), json!(3));
        assert_eq!(
            status_value("metadata_active_tier_mask", "0x3"),
            json!("0x3")
        );
        assert_eq!(status_value("pool_name", "123"), json!("123"));
        assert_eq!(status_value("last_reconcile_reason", ""), json!(""));
    }

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(951_782_400_123);
        assert_eq!(rfc3339_ms(t), "2000-02-29T00:00:00.123Z");
    }

    #[test]
    fn inspect_json_uses_names() {
        let mut a = AttrBuf::new();
        a.put_bytes(Attr::ObjectId, &[0x11; 16])
            .put_u8(Attr::MovementState, 7)
            .put_u8(Attr::PinState, 1)
            .put_u8(Attr::ObjectKind, 1)
            .put_u64(Attr::SizeBytes, 5)
            .put_str(Attr::RelPath, "d/x")
            .put_bool(Attr::Mediated, false);
        let attrs = Attrs::parse(a.as_bytes()).unwrap();
        let m = attrs_json(&attrs);
        assert_eq!(m["object_id"], json!("11".repeat(16)));
        assert_eq!(m["movement_state"], json!("switched"));
        assert_eq!(m["pin_state"], json!("pin_hot"));
        assert_eq!(m["object_kind"], json!("regular"));
        assert_eq!(m["size_bytes"], json!(5));
        assert_eq!(m["rel_path"], json!("d/x"));
        assert_eq!(m["mediated"], json!(false));
    }
}
