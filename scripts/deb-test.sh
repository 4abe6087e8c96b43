#!/usr/bin/env bash
# Package test (issue 7): build the .deb, install it, mount a pool with an
# fstab line through the packaged mount helper (`mount -T FSTAB MNT`, i.e.
# `mount -t fuse.smoothfs`; systemd is not PID 1 on CI machines), use it,
# unmount, and remove + purge the package, checking nothing is left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "deb-test.sh needs root" >&2; exit 1; }
deb=$(scripts/build-deb.sh)
echo "==> built $deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p'
dpkg-deb --contents "$deb" | awk '{print $6, $7, $8}'

work=$(mktemp -d /tmp/smoothfs-deb.XXXXXX)
loops=()
cleanup() {
  set +e
  mountpoint -q "$work/mnt" && umount "$work/mnt"
  for t in t0 t1; do mountpoint -q "$work/$t" && umount "$work/$t"; done
  for l in "${loops[@]}"; do losetup -d "$l"; done
  dpkg -s smoothfs >/dev/null 2>&1 && dpkg --purge smoothfs >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

dpkg -i "$deb"
test -x /usr/bin/smoothfs
test "$(readlink /sbin/mount.fuse.smoothfs)" = /usr/bin/smoothfs
test -f /lib/systemd/system/smoothfs-controlplane.service
test -f /etc/default/smoothfs
/usr/bin/smoothfs --version

for t in t0 t1; do
  truncate -s 256M "$work/$t.img"
  mkfs.ext4 -q -F "$work/$t.img"
  dev=$(losetup -f --show "$work/$t.img")
  loops+=("$dev")
  mkdir -p "$work/$t"
  mount "$dev" "$work/$t"
done
mkdir -p "$work/mnt"
uuid=$(cat /proc/sys/kernel/random/uuid)
fstab="$work/fstab"
echo "debtest $work/mnt fuse.smoothfs pool=debtest,uuid=$uuid,tiers=$work/t0:$work/t1,nofail 0 0" >"$fstab"
echo "==> fstab line: $(cat "$fstab")"
mount -T "$fstab" "$work/mnt"
findmnt -n -o FSTYPE "$work/mnt" | grep -qx fuse.smoothfs
echo "packaged smoothfs" >"$work/mnt/hello.txt"
test "$(cat "$work/mnt/hello.txt")" = "packaged smoothfs"
/usr/bin/smoothfs status --pool debtest --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["pool_name"]=="debtest", d'
umount "$work/mnt"
for _ in $(seq 1 50); do pgrep -f "pool=debtest" >/dev/null || break; sleep 0.1; done
! pgrep -f "pool=debtest" >/dev/null

dpkg -r smoothfs
test ! -e /usr/bin/smoothfs
test ! -e /sbin/mount.fuse.smoothfs
test -f /etc/default/smoothfs   # conffile kept until purge
dpkg --purge smoothfs
test ! -e /etc/default/smoothfs
test ! -e /var/lib/smoothfs
echo "deb-test: ok"
