# pmemd's full cycle on a real kernel, run by test_cycle.py as the harness job on every boot of
# one GRUB-booted guest with a QEMU NVDIMM (see tests/e2e/README.md for the job protocol).
# The shared helpers (ev, wait_status, write_config, the namespaces ...) are in lib.sh.
# These cycles prove the direct write of the default entry (trial boots: jobs/trial-cycle.sh).
TRIAL_BOOT=never
. "$HARNESS_FILES/lib.sh"

# the block device of the QEMU NVDIMM (nd bus provider ACPI.NFIT)
nvdev() {
    local r bus b
    for r in /sys/bus/nd/devices/region*; do
        bus=$(basename "$(dirname "$(readlink -f "$r")")")
        [ "$(cat "/sys/bus/nd/devices/$bus/provider")" = ACPI.NFIT ] || continue
        for b in "$r"/namespace*/block/*; do [ -e "$b" ] && echo "/dev/${b##*/}"; done
    done
}

# every boot: the evidence the issue asks for, before and after this boot's steps
evidence() {
    local tag=$1
    pmem_evidence "$tag"
    ev "$tag-dropin" cat /etc/default/grub.d/99-pmemd.cfg
    ev "$tag-grubcfg" grep -E '^[[:space:]]*linux[[:space:]]' /boot/grub/grub.cfg
    ev "$tag-sha" sha256sum /etc/default/grub /boot/grub/grub.cfg
}

bad_ns() {  # a 1G namespace at offset $1, which pmemd must refuse
    printf '  bad:\n    size: 1G\n    offset: %s\n' "$1"
}

# refused CASE OFFSET STATUS_GLOB: a namespace at OFFSET is refused and nothing of GRUB changes
refused() {
    write_config flag "$(bad_ns "$2")"
    wait_status "$3" 60 "$1"
    sleep 3  # time for a (wrong) pass to touch something
    ev "$1-validate" pmemd validate
    ev "$1-sha" sha256sum /etc/default/grub /boot/grub/grub.cfg
    ev "$1-dropin" ls /etc/default/grub.d/
    ev "$1-reboot-required" ls /run/reboot-required
}

udevadm settle
case $n in
1)
    # Step 1: a guest without memmap; install the package; the service runs, in sync, empty config.
    ev pre-sha sha256sum /etc/default/grub /boot/grub/grub.cfg
    ev cmdline cat /proc/cmdline
    install_package
    # The NVDIMM gets a filesystem of its own that pmemd must never touch.
    nv=$(nvdev)
    echo "$nv" >"$o/b1-nvdev"
    mkfs.ext4 -q -L nvdata "$nv" && mkdir -p /mnt/nv && mount "$nv" /mnt/nv \
        && echo "written by the test in boot 1" >/mnt/nv/precious && umount /mnt/nv
    ev nv-blkid blkid -p -o export "$nv"

    # Negative cases: refused before GRUB is touched.
    refused misaligned 5000M '*5000M*'
    refused reserved 1012G '*0xfd00000000*'  # QEMU's firmware map reserves 0xfd00000000-0xffffffffff

    # Step 2: two namespaces; the running daemon picks the file up by itself.
    write_config flag "$FAST_NS" "$BULK_NS"
    wait_status 'reboot pending*' 120 pending
    evidence after
    journal after
    echo reboot >"$HARNESS_NEXT"
    ;;
2)
    # Step 3: booted through GRUB with pmemd's arguments; formatted, mounted, DAX verified.
    synced_with_markers
    # the service's device access: no policy that could shut it out of /dev/pmem* (it just ran mkfs)
    ev unit-devices systemctl show -p DevicePolicy -p DeviceAllow pmemd
    for ns in fast bulk; do
        ev "$ns-blkid" blkid -p -o export "$(findmnt -no SOURCE "/pmem/$ns")"
    done
    echo reboot >"$HARNESS_NEXT"
    ;;
3)
    # Step 4: the RAM came back blank; pmemd formats and mounts again; no duplicate arguments.
    wait_status 'in sync: 2/2 namespaces mounted with DAX' 240 synced
    evidence after
    journal after
    for ns in fast bulk; do
        ev "$ns-marker" cat "/pmem/$ns/marker"
        ev "$ns-blkid" blkid -p -o export "$(findmnt -no SOURCE "/pmem/$ns")"
    done
    # Step 5: remove bulk.
    write_config flag "$FAST_NS"
    wait_status 'reboot pending*' 120 pending
    evidence removed
    journal removed
    echo reboot >"$HARNESS_NEXT"
    ;;
4)
    # Step 5 after the reboot: bulk's device and mount are gone, fast is untouched.
    wait_status 'in sync: 1/1 namespaces mounted with DAX' 240 synced
    evidence after
    journal after
    # Negative: a filesystem pmemd did not write on fast's device before pmemd starts.
    dev=$(pmemdev $FAST)
    systemctl stop pmemd
    umount /pmem/fast
    mkfs.ext4 -q -F -L foreign "$dev"
    mkdir -p /mnt/f && mount "$dev" /mnt/f && echo "not pmemd's" >/mnt/f/data && umount /mnt/f
    ev foreign-before blkid -p -o export "$dev"
    ev foreign-start systemctl start pmemd
    wait_status 'error:*' 60 foreign
    ev foreign-after blkid -p -o export "$dev"
    ev foreign-mountinfo grep pmem /proc/self/mountinfo
    mount -o ro "$dev" /mnt/f && ev foreign-data cat /mnt/f/data; umount /mnt/f
    ev foreign-status pmemd status
    ev foreign-journal journalctl -b -u pmemd -o json --no-pager
    wipefs -q -a "$dev"
    # Step 6: reboot: now, bulk comes back and a devdax namespace is added; pmemd reboots the guest.
    date +%s >"$o/b4-reboot-now-at"
    echo "waiting for pmemd to reboot" >"$o/b4-done"
    checkpoint
    write_config now "$FAST_NS" "$BULK_NS" "$DEV_NS"
    sleep 240
    echo "pmemd did not reboot the guest within 240 s" | tee "$o/b4-not-rebooted"
    exit 4
    ;;
5)
    wait_status 'in sync: 2/2 namespaces mounted with DAX' 240 synced
    evidence after
    journal after
    ev previous-journal journalctl -b -1 -u pmemd -o json --no-pager
    ev dax-devices ls /dev/
    nv=$(nvdev)
    echo "$nv" >"$o/b5-nvdev"
    ev nv-blkid blkid -p -o export "$nv"
    mount -o ro "$nv" /mnt/nv && ev nv-data cat /mnt/nv/precious; umount /mnt/nv
    ev security systemd-analyze security pmemd --no-pager
    # start-up of the CLI on this release, beside the interpreter with pmemd's two libraries
    for i in 1 2 3; do ev "plan-$i" pmemd plan; ev "floor-$i" python3 -c 'import pydantic, yaml'; done
    ev deb-size stat -c %s "$HARNESS_FILES"/pmemd_*.deb
    ;;
esac
exit 0
