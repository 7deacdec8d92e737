#!/bin/sh
# Runs inside the freshly debootstrapped rootfs (chroot, no /proc needed).
# Everything that makes the stock Debian 13 minbase a harness guest lives here.
# LAYOUT (bios | uefi-grub | sdboot), ESP (its mount point, empty on bios) and ESP_UUID
# come from build.py.
set -eu
: "${LAYOUT:=bios}" "${ESP:=}" "${ESP_UUID:=}"

echo pmemd-e2e >/etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tpmemd-e2e\n' >/etc/hosts
cat >/etc/fstab <<'FSTAB'
LABEL=pmemroot / ext4 errors=remount-ro 0 1
FSTAB
if [ -n "$ESP" ]; then
    echo "UUID=$ESP_UUID $ESP vfat umask=0077 0 2" >>/etc/fstab
fi
if [ "$LAYOUT" = sdboot ]; then
    # kernel-install names the entries <machine-id>-<kver>.conf and loader.conf's default is
    # "<machine-id>-*": the booted guest must have the id the image was built with.
    if ! grep -qE '^[0-9a-f]{32}$' /etc/machine-id 2>/dev/null; then
        systemd-machine-id-setup
    fi
fi
# Root without a password (serial console login for debugging).
passwd -d root

# GRUB: serial console, no menu delay. update-grub in the guest decides the next
# kernel command line; memmap= tests add /etc/default/grub.d/*.cfg drop-ins.
if [ -f /etc/default/grub ]; then
sed -i -e '/^GRUB_TIMEOUT=/d' -e '/^GRUB_CMDLINE_LINUX=/d' -e '/^GRUB_TERMINAL=/d' \
       -e '/^GRUB_SERIAL_COMMAND=/d' /etc/default/grub
cat >>/etc/default/grub <<'GRUB'
GRUB_TIMEOUT=0
GRUB_CMDLINE_LINUX="console=ttyS0,115200"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB
fi

# Faster shutdowns under TCG.
mkdir -p /etc/systemd/system.conf.d
printf '[Manager]\nDefaultTimeoutStopSec=15s\n' >/etc/systemd/system.conf.d/harness.conf

systemctl enable harness-job.service
# ndctl-monitor fails at boot in a guest and leaves the system "degraded".
systemctl mask ndctl-monitor.service
# Nothing to fetch without network; keep timers quiet.
for t in apt-daily.timer apt-daily-upgrade.timer; do systemctl mask "$t" || true; done

apt-get clean
rm -rf /var/lib/apt/lists/* /tmp/* || true
