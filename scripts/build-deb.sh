#!/usr/bin/env bash
# Build the Debian package target/debian/smoothfs_<version>_<arch>.deb from
# the workspace with dpkg-deb: the binary (release), the mount helper link
# /sbin/mount.fuse.smoothfs (so `mount -t fuse.smoothfs` and fstab work),
# the control-plane systemd unit, /etc/default/smoothfs, and the docs.
# Pools are mounted by fstab lines or by the mount units `smoothfs pool
# create` renders (S21).
#
#   scripts/build-deb.sh            -> prints the path of the .deb
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
cargo build --release --quiet -p smoothfs-cli --bin smoothfs >&2
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/smoothfs"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -D -m 0755 "$bin" "$root/usr/bin/smoothfs"
strip --strip-debug "$root/usr/bin/smoothfs" 2>/dev/null || true
mkdir -p "$root/sbin"
ln -s /usr/bin/smoothfs "$root/sbin/mount.fuse.smoothfs"
install -D -m 0644 packaging/smoothfs-controlplane.service \
  "$root/lib/systemd/system/smoothfs-controlplane.service"
install -D -m 0644 packaging/default-smoothfs "$root/etc/default/smoothfs"
for d in README.md docs/runbook.md docs/semantics.md docs/uapi.md docs/architecture.md docs/formats.md; do
  install -D -m 0644 "$d" "$root/usr/share/doc/smoothfs/$(basename "$d")"
done
install -d -m 0755 "$root/var/lib/smoothfs"
mkdir -p "$root/DEBIAN"
size=$(du -sk "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CTRL
Package: smoothfs
Version: $version
Architecture: $arch
Maintainer: smoothfs maintainers <maintainers@example.invalid>
Depends: fuse3, libc6
Recommends: attr, acl
Section: admin
Priority: optional
Installed-Size: $size
Homepage: https://example.invalid/smoothfs
Description: tiering storage engine: one mount over fast and slow disks
 smoothfs presents one POSIX namespace over up to eight tier directories
 (NVMe, SSD, HDD) and moves files between them by heat, safely, even while
 they are open. This package has the FUSE data plane, the mount helper
 (mount -t fuse.smoothfs), the control-plane service and the operator CLI.
CTRL
echo "/etc/default/smoothfs" >"$root/DEBIAN/conffiles"
cat >"$root/DEBIAN/postinst" <<'SH'
#!/bin/sh
set -e
mkdir -p /var/lib/smoothfs /run/smoothfs
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
exit 0
SH
cat >"$root/DEBIAN/prerm" <<'SH'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl stop smoothfs-controlplane.service 2>/dev/null || true
fi
exit 0
SH
cat >"$root/DEBIAN/postrm" <<'SH'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
  rm -rf /var/lib/smoothfs
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
exit 0
SH
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
mkdir -p target/debian
out="target/debian/smoothfs_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$out" >&2
echo "$out"
