//! Data path checks: O_DIRECT through the mount with passthrough on its
//! default (auto) and off (S1.3 bit 7, TESTING.md).

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use common::*;

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Block([u8; 4096]);

/// A 4096-aligned buffer of `blocks` blocks.
fn aligned(blocks: usize) -> Vec<Block> {
    vec![Block([0; 4096]); blocks]
}

fn bytes(buf: &[Block]) -> &[u8] {
    unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), buf.len() * 4096) }
}

fn bytes_mut(buf: &mut [Block]) -> &mut [u8] {
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), buf.len() * 4096) }
}

fn o_direct_round_trip(extra_opts: &str) {
    let p = TwoTierPool::new("ext4", "ext4", extra_opts);
    let path = p.mnt("direct.bin");
    let mut out = aligned(256); // 1 MiB
    bytes_mut(&mut out).copy_from_slice(&pattern(256 * 4096, 41));

    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap_or_else(|e| panic!("open O_DIRECT ({extra_opts:?}): {e}"));
    f.write_all_at(bytes(&out), 0).unwrap();
    // A second aligned write at a 4096-aligned offset past the first.
    f.write_all_at(&bytes(&out)[..8192], 1 << 20).unwrap();
    f.sync_all().unwrap();

    let mut back = aligned(256);
    f.read_exact_at(bytes_mut(&mut back), 0).unwrap();
    assert!(
        bytes(&back) == bytes(&out),
        "O_DIRECT read-back differs ({extra_opts:?})"
    );
    drop(f);

    let mut want = bytes(&out).to_vec();
    want.extend_from_slice(&bytes(&out)[..8192]);
    assert_eq!(
        fs::read(&path).unwrap(),
        want,
        "buffered read after O_DIRECT writes"
    );
    assert_eq!(
        sha256_file(&p.lower("direct.bin")),
        sha256_bytes(&want),
        "lower content"
    );
}

#[test]
fn o_direct_round_trip_with_default_passthrough() {
    if !require_root_and_fuse() {
        return;
    }
    o_direct_round_trip("");
}

#[test]
fn o_direct_round_trip_with_passthrough_off() {
    if !require_root_and_fuse() {
        return;
    }
    o_direct_round_trip("passthrough=off");
}
