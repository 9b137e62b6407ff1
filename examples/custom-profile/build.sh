#!/bin/sh
# Build a tiny initramfs (busybox + the virtio modules) and pick the host's packaged
# kernel, into the directory given as $1 (the profile's `{out}`).
set -eu
out=$1
kver=$(ls /boot | sed -n 's/^vmlinuz-//p' | sort -V | tail -n 1)
cp "/boot/vmlinuz-$kver" "$out/vmlinuz"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/tmp" "$root/lib/modules"
cp "$(command -v busybox)" "$root/bin/busybox"
for a in sh mount insmod echo cat sleep ls; do ln -s busybox "$root/bin/$a"; done
# The drivers the agent's port needs (the Debian cloud kernel has them as modules).
mods="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console"
for m in $mods; do
    cp "$(find "/lib/modules/$kver/kernel" -name "$m.ko" | head -n 1)" "$root/lib/modules/"
done
cat > "$root/init" <<INIT
#!/bin/sh
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1
for m in $mods; do insmod /lib/modules/\$m.ko; done
echo tiny-init-ready
while true; do sh; sleep 1; done
INIT
chmod 755 "$root/init"
(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null) | gzip -1 > "$out/initrd.cpio.gz"
