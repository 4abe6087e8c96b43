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

/// Two real-mount tests running `$body(extra_opts)`: `$auto` with
/// passthrough at its default (auto), `$off` with `passthrough=off`.
macro_rules! both_modes {
    ($body:ident, $auto:ident, $off:ident) => {
        #[test]
        fn $auto() {
            if !require_root_and_fuse() {
                return;
            }
            $body("");
        }

        #[test]
        fn $off() {
            if !require_root_and_fuse() {
                return;
            }
            $body("passthrough=off");
        }
    };
}

/// Creates (or truncates) `path` and opens it read-write with O_DIRECT.
fn create_direct(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

fn o_direct_round_trip(extra_opts: &str) {
    let p = TwoTierPool::new("ext4", "ext4", extra_opts);
    let path = p.mnt("direct.bin");
    let mut out = aligned(256); // 1 MiB
    bytes_mut(&mut out).copy_from_slice(&pattern(256 * 4096, 41));

    let f = create_direct(&path).unwrap_or_else(|e| panic!("open O_DIRECT ({extra_opts:?}): {e}"));
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

both_modes!(
    o_direct_round_trip,
    o_direct_round_trip_with_default_passthrough,
    o_direct_round_trip_with_passthrough_off
);

/// Opens are answered with FOPEN_NOFLUSH (close(2) sends no FLUSH): the
/// dirty pages of a shared mapping that outlives its descriptor still reach
/// the lower file when the mapping goes, and bytes written with write(2)
/// are on the lower file once close(2) returns (docs/semantics.md).
fn writes_reach_the_lower_without_flush(extra_opts: &str) {
    let p = TwoTierPool::new("ext4", "ext4", extra_opts);
    let path = p.mnt("mapped.bin");
    let len = 16384usize;
    fs::write(&path, vec![b'.'; len]).unwrap();

    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let map = map_shared_rw(&f, len);
    drop(f);
    // SAFETY: the mapping is live and `len` bytes long; written after the
    // descriptor is closed, then unmapped without msync.
    unsafe {
        std::ptr::copy_nonoverlapping(b"AFTER-CLOSE".as_ptr(), map.cast::<u8>().add(8192), 11);
        assert_eq!(libc::munmap(map, len), 0);
    }
    let lower = fs::read(p.lower("mapped.bin")).unwrap();
    assert_eq!(
        &lower[8192..8203],
        b"AFTER-CLOSE",
        "mapped write reached the lower file ({extra_opts:?})"
    );

    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"WRITTEN", 100).unwrap();
    drop(f);
    let lower = fs::read(p.lower("mapped.bin")).unwrap();
    assert_eq!(
        &lower[100..107],
        b"WRITTEN",
        "write(2) then close(2) ({extra_opts:?})"
    );
    assert_eq!(fs::read(&path).unwrap(), lower, "mount and lower agree");
}

both_modes!(
    writes_reach_the_lower_without_flush,
    writes_reach_the_lower_without_flush_with_default_passthrough,
    writes_reach_the_lower_without_flush_with_passthrough_off
);

/// FUSE_ASYNC_DIO: a mediated O_DIRECT write or read larger than max_write
/// reaches the daemon as several requests in flight at once, and several
/// threads' O_DIRECT I/O on one handle runs concurrently; every byte must
/// land at its offset.
#[test]
fn o_direct_split_and_concurrent_io_with_passthrough_off() {
    if !require_root_and_fuse() {
        return;
    }
    let p = TwoTierPool::new("ext4", "ext4", "passthrough=off");
    let path = p.mnt("async.bin");
    let f = create_direct(&path).unwrap();
    // 4 MiB in one call: four 1 MiB requests (max_write), file-extending.
    let mut big = aligned(1024);
    bytes_mut(&mut big).copy_from_slice(&pattern(1024 * 4096, 7));
    f.write_all_at(bytes(&big), 0).unwrap();
    let mut back = aligned(1024);
    f.read_exact_at(bytes_mut(&mut back), 0).unwrap();
    assert!(
        bytes(&back) == bytes(&big),
        "4 MiB O_DIRECT read-back differs"
    );

    // Four threads, each rewriting its own 1 MiB slice, in parallel.
    let f = std::sync::Arc::new(f);
    let threads: Vec<_> = (0..4u64)
        .map(|i| {
            let f = std::sync::Arc::clone(&f);
            std::thread::spawn(move || {
                let mut buf = aligned(256);
                bytes_mut(&mut buf).copy_from_slice(&pattern(256 * 4096, 100 + i));
                for _ in 0..8 {
                    f.write_all_at(bytes(&buf), i << 20).unwrap();
                    let mut got = aligned(256);
                    f.read_exact_at(bytes_mut(&mut got), i << 20).unwrap();
                    assert!(bytes(&got) == bytes(&buf), "slice {i} read-back differs");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(f);
    let mut want = Vec::new();
    for i in 0..4u64 {
        want.extend_from_slice(&pattern(256 * 4096, 100 + i));
    }
    assert_eq!(
        sha256_file(&p.lower("async.bin")),
        sha256_bytes(&want),
        "lower content after concurrent O_DIRECT writes"
    );
}
