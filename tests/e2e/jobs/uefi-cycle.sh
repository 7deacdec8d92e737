# pmemd's cycle on a UEFI guest (OVMF), run by test_uefi_cycle.py as the harness job on every
# boot. LAYOUT (uefi-grub | sdboot) is set by the test in the line before this file.
# The shared helpers (ev, wait_status, write_config, the namespaces ...) are in lib.sh.
#   boot 1: install the .deb; two namespaces (one offset: auto) -> boot config written, reboot
#   boot 2: pmemd's tokens on the command line; mkfs, DAX mounts; remove bulk -> reboot
#   boot 3: bulk's token gone, fast untouched; install a second kernel the way a kernel package
#           does (run-parts /etc/kernel/postinst.d) -> reboot into it (it is the newest)
#   boot 4: the new kernel's command line has pmemd's tokens; fast in sync; apt-get purge pmemd
#   boot 5: no memmap= on the command line; the boot config as it was before the package
# These cycles prove the direct write of the default entry (trial boots: jobs/trial-cycle.sh).
TRIAL_BOOT=never
. "$HARNESS_FILES/lib.sh"
: "${LAYOUT:?the test sets LAYOUT}"
EFIVARS=/sys/firmware/efi/efivars
LOADER_GUID=4a67b082-0a4c-41cf-b6c7-440b29bb8c4f  # systemd-boot's loader interface variables

efivar() {  # efivar NAME GUID: a UTF-16 string variable, as text
    python3 -c 'import sys; print(open(sys.argv[1], "rb").read()[4:].decode("utf-16-le").rstrip("\0"))' \
        "$EFIVARS/$1-$2"
}

# the boot configuration pmemd edits on this layout, and what the firmware and loader booted
bootcfg() {
    local tag=$1
    case $LAYOUT in
    uefi-grub)
        ev "$tag-dropin" cat /etc/default/grub.d/99-pmemd.cfg
        ev "$tag-grubcfg" grep -E '^[[:space:]]*linux[[:space:]]' /boot/grub/grub.cfg
        ;;
    sdboot)
        ev "$tag-kernel-cmdline" cat /etc/kernel/cmdline
        ev "$tag-entries" grep -H -E '^(version|options|linux|initrd) ' /boot/loader/entries/*.conf
        ev "$tag-loader-conf" cat /boot/loader/loader.conf
        ev "$tag-bootctl-list" bootctl list --no-pager
        ;;
    esac
}

evidence() {
    pmem_evidence "$1"
    bootcfg "$1"
}

udevadm settle
ev uname uname -r
ev efi ls -d /sys/firmware/efi "$EFIVARS"
ev firmware-memmap sh -c 'for d in /sys/firmware/memmap/*; do echo "$(cat $d/start) $(cat $d/end) $(cat $d/type)"; done'
[ "$LAYOUT" = sdboot ] && ev entry-selected efivar LoaderEntrySelected "$LOADER_GUID"
case $n in
1)
    # A UEFI guest without memmap; install the package; the service runs, in sync, empty config.
    ev cmdline cat /proc/cmdline
    bootcfg pre
    ev pre-default-grub sha256sum /etc/default/grub
    install_package
    # Two namespaces; the running daemon picks the file up by itself and writes the boot config.
    write_config flag "$FAST_NS" "$BULK_NS"
    wait_status 'reboot pending*' 180 pending
    evidence after
    journal after
    echo reboot >"$HARNESS_NEXT"
    ;;
2)
    # Booted with pmemd's arguments: devices at the declared addresses, formatted, DAX mounts.
    synced_with_markers
    # Remove bulk.
    write_config flag "$FAST_NS"
    wait_status 'reboot pending*' 180 pending
    evidence removed
    journal removed
    echo reboot >"$HARNESS_NEXT"
    ;;
3)
    # bulk's token, device and mount are gone, fast is untouched.
    wait_status 'in sync: 1/1 namespaces mounted with DAX' 240 synced
    evidence after
    journal after
    # A second kernel, installed the way a Debian kernel package's postinst does it: its files
    # in /boot, then the hooks in /etc/kernel/postinst.d -- GRUB's zz-update-grub or
    # systemd-boot's zz-systemd-boot (kernel-install add). It is this kernel's binary under a
    # newer version (so it is the default entry), with this kernel's initrd: an initrd made for
    # the new name would look for modules in /lib/modules/<new name>, which this binary never
    # asks for (measured: the root disk's driver was missing), so the initramfs-tools hook is
    # skipped. The modules dir gets a link for kernel-install's depmod.
    k=$(uname -r)
    k2=$(echo "$k" | awk -F'[.+-]' '{ printf "%s.%s.%d+e2e-amd64", $1, $2, $3 + 1 }')
    echo "$k2" >"$o/b3-k2"
    ln -sfn "$k" "/lib/modules/$k2"
    for f in vmlinuz initrd.img config System.map; do cp "/boot/$f-$k" "/boot/$f-$k2"; done
    for hook in /etc/kernel/postinst.d/*; do
        [ "${hook##*/}" = initramfs-tools ] && continue
        [ -x "$hook" ] && ev "kernel-hook-${hook##*/}" env DEB_MAINT_PARAMS=configure "$hook" "$k2" "/boot/vmlinuz-$k2"
    done
    ev kernel-hooks ls /etc/kernel/postinst.d
    ev boot-files ls -l /boot
    bootcfg newkernel
    ev newkernel-state cat /var/lib/pmemd/state.json
    ev newkernel-status pmemd status
    echo reboot >"$HARNESS_NEXT"
    ;;
4)
    # The new kernel: its entry was written after pmemd's tokens, and carries them.
    wait_status 'in sync: 1/1 namespaces mounted with DAX' 240 synced
    evidence after
    journal after
    # Removing the package undoes what pmemd set up (prerm: the service stops, pmemd reset).
    ev purge apt-get purge -y pmemd
    ev purged-mountinfo grep pmem /proc/self/mountinfo
    bootcfg purged
    ev purged-leftovers sh -c 'ls -A /etc/default/grub.d /var/lib/pmemd /run/reboot-required 2>&1;
        find /etc /boot -xdev -name "*pmemd*" 2>/dev/null'
    echo reboot >"$HARNESS_NEXT"
    ;;
5)
    # The package is gone, and so is every reservation it made.
    ev final-cmdline cat /proc/cmdline
    ev final-iomem grep -c Persistent /proc/iomem
    ev final-default-grub sha256sum /etc/default/grub
    bootcfg final
    ;;
esac
exit 0
