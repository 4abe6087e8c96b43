//! The control plane's Prometheus endpoint (SPEC S26.2): every numeric
//! status item of every online pool as `smoothfs_pool_<item>{pool,uuid}`
//! (items ending in `_total` as counters, the rest as gauges), per-tier
//! fill/objects/bytes/state, moves by result, bytes moved by method, moves
//! in flight, planner tick durations and decisions, heat records,
//! evacuation progress and recovery actions.
//!
//! Built on `prometheus-client` (text exposition format); served over
//! plain HTTP/1.1 on loopback by a small std listener thread (one request
//! per connection, GET /metrics only).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Default listen address (`smoothfs_metrics_listen`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9475";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
    pub uuid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    pub pool: String,
    pub tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub pool: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub pool: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub pool: String,
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OnlyPool {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
}

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// One tier's numbers for [`Metrics::set_tier`].
#[derive(Clone, Debug, Default)]
pub struct TierSample {
    pub rank: u8,
    pub fill_ratio: f64,
    pub objects: u64,
    pub bytes_used: u64,
    /// 0 ok, 1 faulted, 2 down.
    pub state: u8,
}

/// The metric families. Cheap to update from any thread.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Status items seen so far, registered on first sight.
    pool_gauges: Mutex<HashMap<String, Family<PoolLabels, Gauge>>>,
    pool_counters: Mutex<HashMap<String, Family<PoolLabels, Counter>>>,
    pub tier_fill_ratio: Family<TierLabels, F64Gauge>,
    pub tier_objects: Family<TierLabels, Gauge>,
    pub tier_bytes: Family<TierLabels, Gauge>,
    pub tier_state: Family<TierLabels, Gauge>,
    pub moves: Family<ResultLabels, Counter>,
    pub move_bytes: Family<MethodLabels, Counter>,
    pub moves_in_flight: Family<OnlyPool, Gauge>,
    pub planner_tick_seconds: Histogram,
    pub planner_decisions: Family<DecisionLabels, Counter>,
    pub heat_records: Family<OnlyPool, Counter>,
    pub evacuation_bytes_remaining: Family<TierLabels, Gauge>,
    pub recovery_rows: Family<ActionLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            pool_gauges: Mutex::new(HashMap::new()),
            pool_counters: Mutex::new(HashMap::new()),
            tier_fill_ratio: Family::default(),
            tier_objects: Family::default(),
            tier_bytes: Family::default(),
            tier_state: Family::default(),
            moves: Family::default(),
            move_bytes: Family::default(),
            moves_in_flight: Family::default(),
            planner_tick_seconds: Histogram::new([
                0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0,
            ]),
            planner_decisions: Family::default(),
            heat_records: Family::default(),
            evacuation_bytes_remaining: Family::default(),
            recovery_rows: Family::default(),
        };
        // Counter names lose their `_total` here: the encoder adds it.
        r.register(
            "smoothfs_tier_fill_ratio",
            "Used fraction of the tier's filesystem",
            m.tier_fill_ratio.clone(),
        );
        r.register(
            "smoothfs_tier_objects",
            "Objects whose authoritative copy is on the tier",
            m.tier_objects.clone(),
        );
        r.register(
            "smoothfs_tier_bytes",
            "Bytes used on the tier's filesystem",
            m.tier_bytes.clone(),
        );
        r.register(
            "smoothfs_tier_state",
            "Tier state: 0 ok, 1 faulted, 2 down",
            m.tier_state.clone(),
        );
        r.register(
            "smoothfs_moves",
            "Moves by result (success, failed, aborted, refused)",
            m.moves.clone(),
        );
        r.register(
            "smoothfs_move_bytes",
            "Bytes copied by moves, by copy method",
            m.move_bytes.clone(),
        );
        r.register(
            "smoothfs_moves_in_flight",
            "Moves running now",
            m.moves_in_flight.clone(),
        );
        r.register(
            "smoothfs_planner_tick_seconds",
            "Duration of planner ticks",
            m.planner_tick_seconds.clone(),
        );
        r.register(
            "smoothfs_planner_decisions",
            "Planner decisions by reason code",
            m.planner_decisions.clone(),
        );
        r.register(
            "smoothfs_heat_records",
            "Heat records applied",
            m.heat_records.clone(),
        );
        r.register(
            "smoothfs_evacuation_bytes_remaining",
            "Bytes left on a tier being evacuated",
            m.evacuation_bytes_remaining.clone(),
        );
        r.register(
            "smoothfs_recovery_rows",
            "Rows handled by start-up recovery, by action",
            m.recovery_rows.clone(),
        );
        *m.registry.lock() = r;
        m
    }

    /// Export a pool's STATUS items: numeric ones only (decimal, or `0x…`
    /// masks), `_total` items as counters.
    pub fn set_pool_status(&self, pool: &str, uuid: &str, items: &[(String, String)]) {
        let labels = PoolLabels {
            pool: pool.to_string(),
            uuid: uuid.to_string(),
        };
        for (name, value) in items {
            let Some(v) = parse_number(value) else {
                continue;
            };
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                continue;
            }
            if let Some(base) = name.strip_suffix("_total") {
                let fam = {
                    let mut map = self.pool_counters.lock();
                    map.entry(name.clone())
                        .or_insert_with(|| {
                            let f = Family::<PoolLabels, Counter>::default();
                            self.registry.lock().register(
                                format!("smoothfs_pool_{base}"),
                                format!("Data-plane status item {name}"),
                                f.clone(),
                            );
                            f
                        })
                        .clone()
                };
                fam.get_or_create(&labels)
                    .inner()
                    .store(v, Ordering::Relaxed);
            } else {
                let fam = {
                    let mut map = self.pool_gauges.lock();
                    map.entry(name.clone())
                        .or_insert_with(|| {
                            let f = Family::<PoolLabels, Gauge>::default();
                            self.registry.lock().register(
                                format!("smoothfs_pool_{name}"),
                                format!("Data-plane status item {name}"),
                                f.clone(),
                            );
                            f
                        })
                        .clone()
                };
                fam.get_or_create(&labels)
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            }
        }
    }

    pub fn set_tier(&self, pool: &str, t: &TierSample) {
        let l = TierLabels {
            pool: pool.to_string(),
            tier: t.rank.to_string(),
        };
        self.tier_fill_ratio.get_or_create(&l).set(t.fill_ratio);
        self.tier_objects
            .get_or_create(&l)
            .set(i64::try_from(t.objects).unwrap_or(i64::MAX));
        self.tier_bytes
            .get_or_create(&l)
            .set(i64::try_from(t.bytes_used).unwrap_or(i64::MAX));
        self.tier_state.get_or_create(&l).set(i64::from(t.state));
    }

    /// A move ended: `result` is success, failed, aborted or refused.
    pub fn move_done(&self, pool: &str, result: &str, method: Option<&str>, bytes: u64) {
        self.moves
            .get_or_create(&ResultLabels {
                pool: pool.to_string(),
                result: result.to_string(),
            })
            .inc();
        if let Some(m) = method {
            self.move_bytes
                .get_or_create(&MethodLabels {
                    pool: pool.to_string(),
                    method: m.to_string(),
                })
                .inc_by(bytes);
        }
    }

    pub fn set_in_flight(&self, pool: &str, n: u64) {
        self.moves_in_flight
            .get_or_create(&OnlyPool {
                pool: pool.to_string(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn planner_tick(&self, seconds: f64) {
        self.planner_tick_seconds.observe(seconds);
    }

    pub fn decision(&self, pool: &str, reason: &str) {
        self.planner_decisions
            .get_or_create(&DecisionLabels {
                pool: pool.to_string(),
                decision: reason.to_string(),
            })
            .inc();
    }

    pub fn heat_applied(&self, pool: &str, records: u64) {
        self.heat_records
            .get_or_create(&OnlyPool {
                pool: pool.to_string(),
            })
            .inc_by(records);
    }

    pub fn recovery(&self, action: &str) {
        self.recovery_rows
            .get_or_create(&ActionLabels {
                action: action.to_string(),
            })
            .inc();
    }

    pub fn set_evacuation_remaining(&self, pool: &str, rank: u8, bytes: u64) {
        self.evacuation_bytes_remaining
            .get_or_create(&TierLabels {
                pool: pool.to_string(),
                tier: rank.to_string(),
            })
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry.lock()).is_err() {
            out.clear();
        }
        out
    }
}

fn parse_number(v: &str) -> Option<u64> {
    if let Some(h) = v.strip_prefix("0x") {
        return u64::from_str_radix(h, 16).ok();
    }
    v.parse::<u64>().ok()
}

/// The HTTP listener; stops (and joins) on drop or [`MetricsServer::stop`].
pub struct MetricsServer {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub requests: Arc<AtomicU64>,
}

impl MetricsServer {
    /// Listen on `listen` (e.g. `127.0.0.1:9475`; port 0 picks one).
    pub fn start(metrics: Arc<Metrics>, listen: &str) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let (s, rq) = (Arc::clone(&stop), Arc::clone(&requests));
        let thread = std::thread::Builder::new()
            .name("smoothfs-metrics".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            rq.fetch_add(1, Ordering::Relaxed);
                            if let Err(e) = serve_one(conn, &metrics) {
                                tracing::debug!("metrics request: {e}");
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(e) => {
                            tracing::warn!("metrics listener: {e}");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            })?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
            requests,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve_one(mut conn: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 4096];
    let mut req = Vec::new();
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = req.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = if method == "GET" && (path == "/metrics" || path == "/") {
        (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        )
    } else {
        ("404 Not Found", "text/plain", "not found\n".to_string())
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn pool_status_items_and_families_are_served() {
        let m = Arc::new(Metrics::new());
        m.set_pool_status(
            "tank",
            "u-1",
            &[
                ("spill_creates_total".into(), "1".into()),
                ("metadata_active_tier_mask".into(), "0x3".into()),
                ("pool_name".into(), "tank".into()),
                ("journal_seq".into(), "42".into()),
            ],
        );
        m.set_tier(
            "tank",
            &TierSample {
                rank: 1,
                fill_ratio: 0.5,
                objects: 7,
                bytes_used: 1024,
                state: 0,
            },
        );
        m.move_done("tank", "success", Some("stream"), 4096);
        m.planner_tick(0.02);
        let srv = MetricsServer::start(Arc::clone(&m), "127.0.0.1:0").unwrap();
        let body = get(srv.local_addr(), "/metrics");
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(
            body.contains(r#"smoothfs_pool_spill_creates_total{pool="tank",uuid="u-1"} 1"#),
            "{body}"
        );
        assert!(
            body.contains(r#"smoothfs_pool_metadata_active_tier_mask{pool="tank",uuid="u-1"} 3"#)
        );
        assert!(body.contains(r#"smoothfs_pool_journal_seq{pool="tank",uuid="u-1"} 42"#));
        assert!(!body.contains("smoothfs_pool_pool_name"));
        assert!(body.contains(r#"smoothfs_moves_total{pool="tank",result="success"} 1"#));
        assert!(body.contains(r#"smoothfs_move_bytes_total{pool="tank",method="stream"} 4096"#));
        assert!(body.contains(r#"smoothfs_tier_objects{pool="tank",tier="1"} 7"#));
        assert!(body.contains("smoothfs_planner_tick_seconds_count 1"));
        // Updating a counter item overwrites it with the data plane's value.
        m.set_pool_status("tank", "u-1", &[("spill_creates_total".into(), "5".into())]);
        assert!(
            get(srv.local_addr(), "/metrics")
                .contains(r#"smoothfs_pool_spill_creates_total{pool="tank",uuid="u-1"} 5"#)
        );
        assert!(get(srv.local_addr(), "/nope").starts_with("HTTP/1.1 404"));
        srv.stop();
    }
}
