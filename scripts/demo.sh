#!/usr/bin/env bash
# The main job: build smoothfs, create two loop-backed tiers (ext4 "fast",
# xfs "slow") under /var/tmp/smoothfs-demo and mount a pool over them at
# /mnt/smoothfs/demo. Idempotent: re-running reuses the images and UUID.
# Stop with: umount /mnt/smoothfs/demo
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v mkfs.xfs >/dev/null || need+=(xfsprogs)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v mount.fuse3 >/dev/null || need+=(fuse3)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
cargo build --release -p smoothfs-cli
BIN=$PWD/target/release/smoothfs
D=/var/tmp/smoothfs-demo
MNT=/mnt/smoothfs/demo
mkdir -p "$D/fast" "$D/slow" "$MNT"
mk() { # image fs mountdir
  [ -f "$1" ] || { truncate -s 512M "$1"; "mkfs.$2" -q "$1" >/dev/null 2>&1 || "mkfs.$2" -q -F "$1"; }
  mountpoint -q "$3" || mount -o loop "$1" "$3"
}
mk "$D/fast.img" ext4 "$D/fast"
mk "$D/slow.img" xfs "$D/slow"
[ -f "$D/uuid" ] || cat /proc/sys/kernel/random/uuid > "$D/uuid"
if mountpoint -q "$MNT"; then
  echo "pool already mounted at $MNT"
else
  "$BIN" mount -o "pool=demo,uuid=$(cat "$D/uuid"),tiers=$D/fast:$D/slow" smoothfs:demo "$MNT"
fi
findmnt "$MNT"
df -h "$MNT" "$D/fast" "$D/slow"
echo "pool 'demo' is mounted at $MNT (tiers: $D/fast, $D/slow)"
