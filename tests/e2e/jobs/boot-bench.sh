# Boot -> READY benchmark, run by test_boot_bench.py as the harness job on every boot of one
# GRUB-booted guest. Each measured boot keeps systemd's timestamps of pmemd.service and pmemd's
# journal; the test computes the figures.
#   boot 1: install the .deb; two namespaces (ext4 1G, xfs 512M) -> GRUB written, reboot
#   boots 2-4: measured with two namespaces; boot 4 then configures eight -> reboot
#   boots 5-7: measured with eight namespaces
# These cycles prove the direct write of the default entry (trial boots: jobs/trial-cycle.sh).
TRIAL_BOOT=never
. "$HARNESS_FILES/lib.sh"

eight() {  # eight 384M namespaces at offset: auto, ext4 and xfs in turn
    local i fs
    for i in 1 2 3 4 5 6 7 8; do
        if [ $((i % 2)) = 1 ]; then fs=ext4; else fs=xfs; fi
        printf '  ns%s:\n    size: 384M\n    offset: auto\n    filesystem: {type: %s}\n    mount: {path: /pmem/ns%s}\n' \
            "$i" "$fs" "$i"
    done
}

measure() {  # $1: the number of namespaces
    wait_status "in sync: $1/$1 namespaces mounted with DAX" 300 synced
    ev timestamps systemctl show pmemd -p ExecMainStartTimestampMonotonic \
        -p ActiveEnterTimestampMonotonic -p ExecMainPID
    ev blame systemd-analyze blame --no-pager
    ev critical-chain systemd-analyze critical-chain pmemd.service --no-pager
    # the same start-up once the boot is over: the interpreter alone, and pmemd's imports
    ev floor python3 -c pass
    ev importtime python3 -X importtime -c 'import pmemd.daemon'
    journal bench
    ev cmdline cat /proc/cmdline
}

udevadm settle
case $n in
1)
    install_package
    write_config flag "$FAST_NS" "$BULK_NS"
    wait_status 'reboot pending*' 120 pending
    echo reboot >"$HARNESS_NEXT"
    ;;
2|3)
    measure 2
    echo reboot >"$HARNESS_NEXT"
    ;;
4)
    measure 2
    write_config flag "$(eight)"
    sleep 5
    ev state cat /var/lib/pmemd/state.json
    ev plan8 pmemd plan
    wait_status 'reboot pending*' 120 pending
    echo reboot >"$HARNESS_NEXT"
    ;;
5|6)
    measure 8
    echo reboot >"$HARNESS_NEXT"
    ;;
7)
    measure 8
    ;;
esac
exit 0
