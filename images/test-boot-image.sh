#!/usr/bin/env bash
# Builds the small boot image the ext.vm-packer tests (and the example and
# the benchmark) boot: Debian's kernel plus an initramfs holding busybox,
# dropbear and the few kernel modules it needs. Called by `scripts/vm-image
# build OUT_DIR`; see docs/runbooks/vm-haskell-build.md.
#
#   images/test-boot-image.sh OUT_DIR [--force]
#
# OUT_DIR gets:
#   vmlinuz          the host's newest /boot/vmlinuz-* (or $VM_IMAGE_KERNEL)
#   initrd.img       gzip'd cpio: busybox (as init), dropbear with the
#                    libraries ldd lists, e1000 + evdev + button modules
#   id_ed25519(.pub) a client key authorized for root in the image
#   base.qcow2       an empty 64 MiB qcow2, a base for overlay tests
#   recipe           what was built; a rebuild happens only when it differs
#
# The guest: busybox init runs /etc/rc.sh (proc, sys, devtmpfs, devpts,
# e1000 with 10.0.2.15/24 via 10.0.2.2 -- qemu's user-mode network --, acpid,
# then `dropbear -E -p 22` with a host key made at build time). The ACPI
# power button (qemu's `system_powerdown`) powers it off at once, so a
# graceful stop takes well under a second. Nothing is downloaded: everything
# comes from Debian packages installed here (linux-image-amd64,
# busybox-static, dropbear-bin, cpio, qemu-utils, openssh-client).
set -euo pipefail

# Bump when the image's contents change, so cached copies are rebuilt.
RECIPE_VERSION=2

die() {
    printf 'vm-image: ERROR: %s\n' "$*" >&2
    exit 1
}
say() { printf 'vm-image: %s\n' "$*" >&2; }

[ $# -ge 1 ] || die "usage: $0 OUT_DIR [--force]"
OUT=$1
FORCE=0
[ "${2:-}" = --force ] && FORCE=1

kernel=${VM_IMAGE_KERNEL:-}
if [ -z "$kernel" ]; then
    kernel=$(find /boot -maxdepth 1 -name 'vmlinuz-*' 2>/dev/null | sort -V | tail -n 1)
fi
if [ -z "$kernel" ] || [ ! -r "$kernel" ]; then die "no readable kernel in /boot (install linux-image-amd64, or set VM_IMAGE_KERNEL)"; fi
kver=${kernel##*/vmlinuz-}
mods=/lib/modules/$kver
[ -d "$mods" ] || die "no $mods for kernel $kernel"
for tool in cpio gzip ssh-keygen dropbearkey qemu-img ldd flock; do
    command -v "$tool" >/dev/null || die "$tool not found (see the package list in $0)"
done
[ -x /bin/busybox ] || die "/bin/busybox missing (package busybox-static)"
file_is_static() { ! ldd "$1" >/dev/null 2>&1; }
file_is_static /bin/busybox || die "/bin/busybox is not static (install busybox-static)"
DROPBEAR=$(command -v dropbear || echo /usr/sbin/dropbear)
[ -x "$DROPBEAR" ] || die "dropbear not found (package dropbear-bin)"

recipe="sandboxer-test-boot-image $RECIPE_VERSION kernel $kver"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec 9>"$OUT/.lock"
flock -w 600 9 || die "could not lock $OUT/.lock within 600 s"

if [ $FORCE = 0 ] && [ "$(cat "$OUT/recipe" 2>/dev/null)" = "$recipe" ] &&
    [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ] && [ -s "$OUT/id_ed25519" ] && [ -s "$OUT/base.qcow2" ]; then
    say "present in $OUT ($recipe)"
    exit 0
fi
t0=$(date +%s.%N)
rm -f "$OUT/recipe"

work=$(mktemp -d "${TMPDIR:-/tmp}/vm-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/dropbear,etc/acpi/PWRF,root/.ssh,proc,sys,dev,tmp,run,var/log,lib/modules}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root" "$root/root/.ssh"

# busybox, with every applet linked; it is also init.
cp /bin/busybox "$root/bin/busybox"
for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -sf /bin/busybox "$root/bin/$a"
done
ln -sf /bin/busybox "$root/sbin/init"
ln -sf /bin/busybox "$root/init"

# dropbear and the shared libraries it loads (with the dynamic loader).
cp "$DROPBEAR" "$root/usr/sbin/dropbear"
ldd "$DROPBEAR" | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
# glibc finds users through NSS; libnss_files is built in since 2.34, but
# older ones need it.
for lib in /lib/x86_64-linux-gnu/libnss_files.so.2 /usr/lib/x86_64-linux-gnu/libnss_files.so.2; do
    if [ -e "$lib" ]; then
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    fi
done

# Modules: the NIC, and the power button with the input events acpid reads.
for m in drivers/net/ethernet/intel/e1000/e1000 drivers/input/evdev drivers/acpi/button; do
    src=$mods/kernel/$m
    name=$(basename "$m").ko
    if [ -f "$src.ko" ]; then
        cp "$src.ko" "$root/lib/modules/$name"
    elif [ -f "$src.ko.xz" ]; then
        xz -dc "$src.ko.xz" >"$root/lib/modules/$name"
    elif [ -f "$src.ko.zst" ]; then
        zstd -qdc "$src.ko.zst" >"$root/lib/modules/$name"
    else
        die "module $m not found under $mods/kernel"
    fi
done

cat >"$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf '/bin/sh\n' >"$root/etc/shells"
printf 'passwd: files\ngroup: files\nshadow: files\n' >"$root/etc/nsswitch.conf"
echo sandboxer-vm >"$root/etc/hostname"

cat >"$root/etc/inittab" <<'P'
::sysinit:/etc/rc.sh
::shutdown:/bin/sync
P

cat >"$root/etc/rc.sh" <<'P'
#!/bin/sh
# Runs once at boot (busybox init's sysinit).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
hostname -F /etc/hostname
insmod /lib/modules/evdev.ko
insmod /lib/modules/button.ko
insmod /lib/modules/e1000.ko
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
acpid -c /etc/acpi -a /etc/acpid.conf -l /var/log/acpid.log
dropbear -r /etc/dropbear/dropbear_ed25519_host_key -E -p 22
echo "sandboxer-vm: up"
P
chmod 0755 "$root/etc/rc.sh"

printf 'PWRF PWRF/00000080\n' >"$root/etc/acpid.conf"
printf '#!/bin/sh\n# The power button: off at once (an initramfs has nothing to flush).\nexec /bin/poweroff -f\n' >"$root/etc/acpi/PWRF/00000080"
chmod 0755 "$root/etc/acpi/PWRF/00000080"

# Keys: the guest's host key, and the client key authorized for root.
dropbearkey -t ed25519 -f "$root/etc/dropbear/dropbear_ed25519_host_key" >/dev/null 2>&1
rm -f "$OUT/id_ed25519" "$OUT/id_ed25519.pub"
ssh-keygen -q -t ed25519 -N '' -C sandboxer-test-vm -f "$OUT/id_ed25519"
cp "$OUT/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
chmod 0600 "$root/root/.ssh/authorized_keys"

(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) |
    gzip -1 >"$OUT/initrd.img.tmp"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
cp "$kernel" "$OUT/vmlinuz.tmp"
mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
rm -f "$OUT/base.qcow2"
qemu-img create -q -f qcow2 "$OUT/base.qcow2" 64M
echo "$recipe" >"$OUT/recipe"
say "built $OUT ($recipe, initrd $(du -k "$OUT/initrd.img" | cut -f1) KiB) in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }')"
