#!/usr/bin/env bash
# The main job: build smoothfs, create two loop-backed tiers (ext4 "fast",
# xfs "slow") under /var/tmp/smoothfs-demo and run `smoothfs up` over them:
# the pool mounted at /mnt/smoothfs/demo with its control plane (heat,
# planner, movement) in the foreground, embedded defaults, no config file.
# Idempotent: re-running reuses the images and the pool's identity.
# Stop with Ctrl-C (or SIGTERM): the control plane stops, the pool unmounts.
#
#   DEMO_POLICY="smoothfs_planner_interval_seconds=30"   extra --policy values
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
if mountpoint -q "$MNT"; then
  echo "something is already mounted at $MNT; unmount it first (umount $MNT)" >&2
  exit 1
fi
df -h "$D/fast" "$D/slow"
policy=()
for p in ${DEMO_POLICY:-smoothfs_planner_interval_seconds=30 smoothfs_min_residency_seconds=60 smoothfs_movement_cooldown_seconds=300}; do
  policy+=(--policy "$p")
done
echo "starting: smoothfs up --pool demo --tiers $D/fast:$D/slow --mountpoint $MNT ${policy[*]}"
exec "$BIN" up --pool demo --tiers "$D/fast:$D/slow" --mountpoint "$MNT" -o heat_interval_ms=5000 "${policy[@]}"
