//! Failpoints for crash and race tests, shared by the data plane and the
//! worker.
//!
//! Configured once per process from the environment variable
//! `SMOOTHFS_FAILPOINTS`: a `;`-separated list of `NAME=ACTION` where ACTION
//! is one of
//!
//! - `crash`: `abort()` at once, as if the process were SIGKILLed (no
//!   destructors, no journal sync beyond what was already durable);
//! - `sleep(MS)`: block the calling thread for MS milliseconds;
//! - `error(ERRNO)`: make the step fail with that errno (a number);
//! - `wait(PATH)`: block until the file PATH exists (polled every 20 ms),
//!   so a test can hold a step open for as long as it needs;
//! - `sleepif(PATH,MS)`: sleep MS milliseconds, but only while PATH exists
//!   (a test arms it by creating the file);
//! - `errorif(PATH,ERRNO)`: fail with ERRNO, but only while PATH exists.
//!
//! An action may be prefixed with `N*` to fire only on the N-th hit of the
//! failpoint (counted from 1), e.g. `cutover_after_switch=2*crash`.
//!
//! With the variable unset, [`hit`] is one relaxed atomic load.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Environment variable holding the failpoint list.
pub const ENV: &str = "SMOOTHFS_FAILPOINTS";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Crash,
    Sleep(u64),
    Error(i32),
    Wait(String),
    SleepIf(String, u64),
    ErrorIf(String, i32),
}

#[derive(Debug)]
struct Point {
    action: Action,
    /// Fire only on this hit (1-based); 0 = every hit.
    nth: u64,
    hits: AtomicU64,
}

static POINTS: OnceLock<HashMap<String, Point>> = OnceLock::new();

/// Parse a failpoint list; malformed entries are reported, not ignored.
pub fn parse(spec: &str) -> Result<Vec<(String, u64, Action)>, String> {
    let mut out = Vec::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, action) = entry
            .split_once('=')
            .ok_or_else(|| format!("failpoint '{entry}': expected NAME=ACTION"))?;
        let (nth, action) = match action.split_once('*') {
            Some((n, a)) => (
                n.parse::<u64>()
                    .map_err(|_| format!("failpoint '{entry}': bad hit count '{n}'"))?,
                a,
            ),
            None => (0, action),
        };
        let arg = |prefix: &str| {
            action
                .strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(')'))
                .map(str::to_string)
        };
        let a = if action == "crash" {
            Action::Crash
        } else if let Some(ms) = arg("sleep(") {
            Action::Sleep(
                ms.parse()
                    .map_err(|_| format!("failpoint '{entry}': bad sleep '{ms}'"))?,
            )
        } else if let Some(e) = arg("error(") {
            Action::Error(
                e.parse()
                    .map_err(|_| format!("failpoint '{entry}': bad errno '{e}'"))?,
            )
        } else if let Some(p) = arg("wait(") {
            Action::Wait(p)
        } else if let Some(a) = arg("errorif(") {
            let (p, e) = a
                .rsplit_once(',')
                .ok_or_else(|| format!("failpoint '{entry}': expected errorif(PATH,ERRNO)"))?;
            Action::ErrorIf(
                p.to_string(),
                e.parse()
                    .map_err(|_| format!("failpoint '{entry}': bad errno '{e}'"))?,
            )
        } else if let Some(a) = arg("sleepif(") {
            let (p, ms) = a
                .rsplit_once(',')
                .ok_or_else(|| format!("failpoint '{entry}': expected sleepif(PATH,MS)"))?;
            Action::SleepIf(
                p.to_string(),
                ms.parse()
                    .map_err(|_| format!("failpoint '{entry}': bad sleep '{ms}'"))?,
            )
        } else {
            return Err(format!("failpoint '{entry}': unknown action '{action}'"));
        };
        out.push((name.trim().to_string(), nth, a));
    }
    Ok(out)
}

fn points() -> &'static HashMap<String, Point> {
    POINTS.get_or_init(|| {
        let Ok(spec) = std::env::var(ENV) else {
            return HashMap::new();
        };
        match parse(&spec) {
            Ok(v) => v
                .into_iter()
                .map(|(n, nth, action)| {
                    (
                        n,
                        Point {
                            action,
                            nth,
                            hits: AtomicU64::new(0),
                        },
                    )
                })
                .collect(),
            Err(e) => {
                eprintln!("smoothfs: ignoring {ENV}: {e}");
                HashMap::new()
            }
        }
    })
}

/// Evaluate failpoint `name`: returns `Err(errno)` for an `error` action,
/// otherwise `Ok(())` after any sleep or wait; `crash` never returns.
pub fn hit(name: &str) -> Result<(), i32> {
    let pts = points();
    if pts.is_empty() {
        return Ok(());
    }
    let Some(p) = pts.get(name) else {
        return Ok(());
    };
    let n = p.hits.fetch_add(1, Ordering::Relaxed) + 1;
    if p.nth != 0 && p.nth != n {
        return Ok(());
    }
    match &p.action {
        Action::Crash => {
            eprintln!("smoothfs: failpoint {name}: crash");
            std::process::abort();
        }
        Action::Sleep(ms) => {
            std::thread::sleep(Duration::from_millis(*ms));
            Ok(())
        }
        Action::Error(e) => Err(*e),
        Action::ErrorIf(path, e) => {
            if std::path::Path::new(path).exists() {
                Err(*e)
            } else {
                Ok(())
            }
        }
        Action::SleepIf(path, ms) => {
            if std::path::Path::new(path).exists() {
                std::thread::sleep(Duration::from_millis(*ms));
            }
            Ok(())
        }
        Action::Wait(path) => {
            while !std::path::Path::new(path).exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        }
    }
}

/// Whether any failpoint is configured (for log lines at start).
pub fn active() -> bool {
    !points().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_action() {
        assert_eq!(
            parse("e=sleepif(/tmp/a,b,40)").unwrap(),
            vec![("e".into(), 0, Action::SleepIf("/tmp/a,b".into(), 40))]
        );
        let v = parse("a=crash; b=sleep(250);c=error(5);d=2*wait(/tmp/x)").unwrap();
        assert_eq!(
            v,
            vec![
                ("a".into(), 0, Action::Crash),
                ("b".into(), 0, Action::Sleep(250)),
                ("c".into(), 0, Action::Error(5)),
                ("d".into(), 2, Action::Wait("/tmp/x".into())),
            ]
        );
        assert!(parse("x").is_err());
        assert!(parse("x=boom").is_err());
        assert!(parse("x=sleep(abc)").is_err());
        assert!(parse("x=z*crash").is_err());
        assert_eq!(parse("").unwrap(), vec![]);
    }
}
