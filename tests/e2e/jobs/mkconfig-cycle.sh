# pmemd's grub2-mkconfig layout on the real GRUB (the uefi-grub image), run by test_uefi_cycle.py:
# Debian's grub-mkconfig under the RHEL name, settings.bootloader: grub2-mkconfig, so pmemd edits
# GRUB_CMDLINE_LINUX in /etc/default/grub itself (no grub.d drop-in) and runs grub2-mkconfig -o.
#   boot 1: install the .deb; two namespaces -> /etc/default/grub edited, grub.cfg made, reboot
#   boot 2: pmemd's tokens on the command line, DAX mounts; apt-get purge pmemd -> reboot
#   boot 3: no memmap=; /etc/default/grub byte for byte what it was before the package
. "$HARNESS_FILES/lib.sh"
export BOOTLOADER=grub2-mkconfig

grubcfg() {
    ev "$1-default-grub" cat /etc/default/grub
    ev "$1-default-grub-sha" sha256sum /etc/default/grub
    ev "$1-grub-d" ls -A /etc/default/grub.d
    ev "$1-grubcfg" grep -E '^[[:space:]]*linux[[:space:]]' /boot/grub/grub.cfg
}

udevadm settle
case $n in
1)
    ev cmdline cat /proc/cmdline
    grubcfg pre
    ln -s "$(command -v grub-mkconfig)" /usr/sbin/grub2-mkconfig
    install_package
    write_config flag "$FAST_NS" "$BULK_NS"
    wait_status 'reboot pending*' 180 pending
    grubcfg after
    ev after-plan pmemd plan
    ev after-state cat /var/lib/pmemd/state.json
    journal after
    echo reboot >"$HARNESS_NEXT"
    ;;
2)
    wait_status 'in sync: 2/2 namespaces mounted with DAX' 240 synced
    pmem_evidence after
    journal after
    ev purge apt-get purge -y pmemd
    grubcfg purged
    echo reboot >"$HARNESS_NEXT"
    ;;
3)
    ev final-cmdline cat /proc/cmdline
    grubcfg final
    ;;
esac
exit 0
