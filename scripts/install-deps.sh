#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine that
# has only Rust, gcc, python3 and git. Idempotent: a machine that already has
# every tool runs no package manager at all.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

# command -> Debian package that provides it
declare -A NEED=(
  [fusermount3]=fuse3
  [mount.fuse3]=fuse3
  [mkfs.ext4]=e2fsprogs
  [mkfs.xfs]=xfsprogs
  [mkfs.vfat]=dosfstools
  [getfattr]=attr
  [setfattr]=attr
  [setfacl]=acl
  [getfacl]=acl
  [losetup]=mount
  [mount]=mount
  [findmnt]=util-linux
  [fallocate]=util-linux
  [runuser]=util-linux
  [setpriv]=util-linux
  [fio]=fio
  [mergerfs]=mergerfs
  [sha256sum]=coreutils
  [truncate]=coreutils
)

have() {
  command -v "$1" >/dev/null 2>&1 || [ -x "/sbin/$1" ] || [ -x "/usr/sbin/$1" ]
}

missing=()
for cmd in "${!NEED[@]}"; do
  have "$cmd" || missing+=("${NEED[$cmd]}")
done

if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "install-deps: installing ${pkgs[*]}"
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo -n)
  "${as_root[@]}" apt-get update -q </dev/null
  "${as_root[@]}" apt-get install -y -q --no-install-recommends "${pkgs[@]}" </dev/null
else
  echo "install-deps: system packages present"
fi

# /dev/fuse is a character device the kernel provides; a container may lack
# the node even though the module is built in.
if [ ! -e /dev/fuse ] && [ "$(id -u)" -eq 0 ]; then
  mknod -m 0666 /dev/fuse c 10 229 || true
fi

# POSIX suites from crates.io, cached in ~/.cargo/bin across runs.
export PATH="$HOME/.cargo/bin:$PATH"
for tool in pjdfstest fsx; do
  if have "$tool"; then
    echo "install-deps: $tool present"
  else
    echo "install-deps: cargo install $tool"
    cargo install --locked --quiet "$tool" </dev/null
  fi
done

echo "install-deps: done"
