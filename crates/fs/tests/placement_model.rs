//! Reference-model test: random sequences of namespace operations applied to
//! [`Placement`] and to a plain in-memory model must agree on every name,
//! object and tombstone, also across clean remounts and crashes after sync.

use std::collections::HashMap;

use proptest::prelude::*;
use smoothfs_fs::journal::NO_SLOT;
use smoothfs_fs::oid::Oid;
use smoothfs_fs::placement::{ObjectRec, Placement, kind};

const POOL: [u8; 16] = [0x33; 16];
const NAMES: [&str; 6] = ["d/a", "d/b", "c", "e", "d/f", "g"];

#[derive(Clone, Debug)]
enum Op {
    Create(usize),
    Link(usize, usize),
    Unlink(usize, usize),
    Rename(usize, usize),
    SetGen(usize, u32),
    SetPin(usize, u8),
    Remount,
    CrashAfterSync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..NAMES.len()).prop_map(Op::Create),
        2 => (0..8usize, 0..NAMES.len()).prop_map(|(o, n)| Op::Link(o, n)),
        2 => (0..8usize, 0..3usize).prop_map(|(o, n)| Op::Unlink(o, n)),
        3 => (0..8usize, 0..NAMES.len()).prop_map(|(o, n)| Op::Rename(o, n)),
        1 => (0..8usize, 0..5u32).prop_map(|(o, g)| Op::SetGen(o, g)),
        1 => (0..8usize, 0..3u8).prop_map(|(o, p)| Op::SetPin(o, p)),
        1 => Just(Op::Remount),
        1 => Just(Op::CrashAfterSync),
    ]
}

#[derive(Default)]
struct Model {
    /// oid -> (gen, names, policy pin); names in index order.
    objects: HashMap<Oid, (u32, Vec<String>, u8)>,
    paths: HashMap<String, Oid>,
    tombstones: HashMap<Oid, u32>,
    /// Every OID ever created, in order (ops pick objects by index).
    created: Vec<Oid>,
}

impl Model {
    fn live(&self, i: usize) -> Option<Oid> {
        let live: Vec<Oid> = self
            .created
            .iter()
            .copied()
            .filter(|o| self.objects.contains_key(o))
            .collect();
        if live.is_empty() {
            None
        } else {
            Some(live[i % live.len()])
        }
    }

    fn drop_name(&mut self, oid: Oid, path: &str) {
        if let Some((g, names, _)) = self.objects.get_mut(&oid) {
            names.retain(|n| n != path);
            if names.is_empty() {
                let g = *g;
                self.objects.remove(&oid);
                self.tombstones.insert(oid, g);
            }
        }
        self.paths.remove(path);
    }
}

fn check(p: &Placement, m: &Model) {
    for name in NAMES {
        assert_eq!(
            p.by_path(name).map(|r| r.oid),
            m.paths.get(name).copied(),
            "by_path({name})"
        );
    }
    for oid in &m.created {
        match m.objects.get(oid) {
            Some((g, names, pin)) => {
                let rec = p.get(oid).unwrap_or_else(|| panic!("{oid} missing"));
                assert_eq!(&rec.nlink_names, names, "{oid}");
                assert_eq!(rec.rel_path, names[0]);
                assert_eq!((rec.r#gen, rec.policy_pin), (*g, *pin));
                assert_eq!(p.by_ino(oid.ino()).map(|r| r.oid), Some(*oid));
            }
            None => {
                assert!(p.get(oid).is_none(), "{oid} should be tombstoned");
                assert_eq!(p.tombstone(oid), m.tombstones.get(oid).copied());
            }
        }
    }
    let mut listed: Vec<String> = p
        .children("d")
        .into_iter()
        .map(|(n, _)| format!("d/{n}"))
        .collect();
    listed.sort();
    let mut expected: Vec<String> = m
        .paths
        .keys()
        .filter(|k| k.starts_with("d/"))
        .cloned()
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
}

fn run(ops: Vec<Op>) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut p, _) = Placement::open(tmp.path(), POOL).unwrap();
    p.placed(&ObjectRec::new(Oid([0xDD; 16]), kind::DIR, NO_SLOT, 0, "d"))
        .unwrap();
    let mut m = Model::default();
    let mut next = 1u8;
    for op in ops {
        match op {
            Op::Create(n) => {
                let path = NAMES[n];
                if !m.paths.contains_key(path) {
                    let oid = Oid([next; 16]);
                    next += 1;
                    p.placed(&ObjectRec::new(oid, kind::FILE, 0, next as u64, path))
                        .unwrap();
                    m.objects.insert(oid, (0, vec![path.to_string()], 0));
                    m.paths.insert(path.to_string(), oid);
                    m.created.push(oid);
                }
            }
            Op::Link(o, n) => {
                let path = NAMES[n];
                if let Some(oid) = m.live(o)
                    && !m.paths.contains_key(path)
                {
                    p.link(&oid, path).unwrap();
                    if let Some(e) = m.objects.get_mut(&oid) {
                        e.1.push(path.to_string());
                    }
                    m.paths.insert(path.to_string(), oid);
                }
            }
            Op::Unlink(o, k) => {
                if let Some(oid) = m.live(o) {
                    let (g, names, _) = m.objects[&oid].clone();
                    let path = names[k % names.len()].clone();
                    p.unlink(&oid, g, names.len() as u32 - 1, &path).unwrap();
                    m.drop_name(oid, &path);
                }
            }
            Op::Rename(o, n) => {
                let new = NAMES[n];
                if let Some(oid) = m.live(o) {
                    let old = m.objects[&oid].1[0].clone();
                    let target = m.paths.get(new).copied();
                    if target != Some(oid) {
                        p.rename(&oid, target.as_ref(), &old, new).unwrap();
                        if let Some(t) = target {
                            m.drop_name(t, new);
                        }
                        if let Some(e) = m.objects.get_mut(&oid) {
                            e.1[0] = new.to_string();
                        }
                        m.paths.remove(&old);
                        m.paths.insert(new.to_string(), oid);
                    }
                }
            }
            Op::SetGen(o, g) => {
                if let Some(oid) = m.live(o) {
                    p.set_gen(&oid, g).unwrap();
                    if let Some(e) = m.objects.get_mut(&oid) {
                        e.0 = g;
                    }
                }
            }
            Op::SetPin(o, pin) => {
                if let Some(oid) = m.live(o) {
                    p.set_pin(&oid, pin, 0, false).unwrap();
                    if let Some(e) = m.objects.get_mut(&oid) {
                        e.2 = pin;
                    }
                }
            }
            Op::Remount => {
                p.close().unwrap();
                p = Placement::open(tmp.path(), POOL).unwrap().0;
            }
            Op::CrashAfterSync => {
                p.sync().unwrap();
                p.simulate_crash();
                let (np, report) = Placement::open(tmp.path(), POOL).unwrap();
                assert!(!report.degraded);
                p = np;
            }
        }
        check(&p, &m);
    }
    p.close().unwrap();
    let (p, _) = Placement::open(tmp.path(), POOL).unwrap();
    check(&p, &m);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn placement_agrees_with_the_reference_model(ops in prop::collection::vec(op(), 1..40)) {
        run(ops);
    }
}
