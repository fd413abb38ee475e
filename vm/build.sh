#!/bin/sh
# Builds the test lane's kernel and initramfs into a cache directory, once:
# the cache is rebuilt only when its key changes (the kernel package that
# linux-image-amd64 depends on, the busybox-static version, this script,
# vm/init and vm/systemd/). Nothing is installed on the host: both packages are fetched with
# `apt-get download` and unpacked with `dpkg -x`.
#
# usage: vm/build.sh CACHE_DIR
# exit 0: the cache is ready; exit 3: the inputs cannot be had on this host
# (the reason is printed on stderr, for the caller's SKIP line); other: error.
set -eu

cache=$1
here=$(cd "$(dirname "$0")" && pwd)
modules="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
         9pnet 9pnet_virtio netfs fscache 9p overlay"

cannot() { echo "$*" >&2; exit 3; }

command -v apt-cache >/dev/null && command -v dpkg >/dev/null \
    || cannot "no apt-cache/dpkg on this host (the lane needs Debian's kernel package)"

kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'
}
candidate() {
    apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" { print $2; exit }'
}

pkg=$(kernel_package)
if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
    # A fresh container has no package lists yet.
    apt-get update -qq >&2 || true
    pkg=$(kernel_package)
fi
[ -n "$pkg" ] || cannot "apt-cache knows no linux-image-amd64 (run apt-get update as root)"

# Two lanes started together must not build into the same cache at once.
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9

key="$pkg=$(candidate "$pkg") busybox-static=$(candidate busybox-static)"
key="$key $(cat "$here/init" "$0" "$here"/systemd/* | sha256sum | cut -c1-16)"
if [ -f "$cache/key" ] && [ "$(cat "$cache/key")" = "$key" ] \
    && [ -f "$cache/vmlinuz" ] && [ -f "$cache/initramfs.cpio.gz" ]; then
    exit 0
fi

echo "vm-build: building $cache for $key" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# As root, apt would drop to the _apt user, which cannot write into our
# private temporary directory.
sandbox=""
[ "$(id -u)" = 0 ] && sandbox="-o APT::Sandbox::User=root"
# shellcheck disable=SC2086
(cd "$work" && apt-get download -q $sandbox "$pkg" busybox-static >&2) \
    || cannot "apt-get download $pkg busybox-static failed (no network or package mirror?)"
dpkg -x "$work"/linux-image-*.deb "$work/kernel"
dpkg -x "$work"/busybox-static_*.deb "$work/busybox"

root=$work/initramfs
mkdir -p "$root/bin" "$root/modules" "$root/dev" "$root/proc" "$root/sys" "$root/host"
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
cp "$here/init" "$root/init"
cp -r "$here/systemd" "$root/systemd"
chmod 755 "$root/init" "$root/bin/busybox"
for m in $modules; do
    found=$(find "$work/kernel/lib/modules" -name "$m.ko*" | head -n 1)
    [ -n "$found" ] || { echo "vm-build: $pkg has no module $m" >&2; exit 1; }
    # busybox insmod wants plain .ko files; newer kernels ship them compressed.
    case $found in
        *.ko) cp "$found" "$root/modules/$m.ko" ;;
        *.ko.xz) xz -dc "$found" > "$root/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$found" > "$root/modules/$m.ko" ;;
        *) echo "vm-build: cannot unpack $found" >&2; exit 1 ;;
    esac
done

rm -f "$cache/key"
(cd "$root" && find . | "$root/bin/busybox" cpio -o -H newc -R 0:0 2>/dev/null) \
    | gzip -1 > "$cache/initramfs.cpio.gz"
cp "$work"/kernel/boot/vmlinuz-* "$cache/vmlinuz"
echo "$key" > "$cache/key"
echo "vm-build: done" >&2
