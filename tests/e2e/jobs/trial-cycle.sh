# Trial boots on a real boot loader, run by test_trial_cycle.py as the harness job on every boot
# (job protocol: tests/e2e/README.md). LAYOUT (grub = BIOS GRUB | sdboot = OVMF systemd-boot) is
# set by the test in the line before this file. settings.trial_boot is left at its default, auto.
#   boot 1: install; config {fast} -> a trial of fast is armed (the default entry is unchanged)
#   boot 2: the trial boot (marker on the command line): verified, committed, mounted with DAX.
#           A unit that crashes a trial boot is installed; config {fast, bulk} -> trial armed
#   (qemu's next boot panics before pmemd runs: panic=10 resets the machine; no job runs)
#   boot 3: back on the committed arguments by itself: pmemd says the trial failed and does not
#           arm it again; the crash unit goes; pmemd apply --retry-trial arms it again
#   boot 4: the retried trial boot: verified, committed, both mounted. A unit that unbinds the
#           region of a third namespace (spare) in a trial boot is installed; config
#           {fast, bulk, spare} -> trial armed
#   boot 5: the trial boot: spare's region has no device, verification fails, no commit;
#           pmemd rollback -> the arguments before the last commit (fast only)
#   boot 6: fast only on the command line, no marker; the rollback is remembered
. "$HARNESS_FILES/lib.sh"
: "${LAYOUT:?the test sets LAYOUT}"
EFIVARS=/sys/firmware/efi/efivars
LOADER_GUID=4a67b082-0a4c-41cf-b6c7-440b29bb8c4f  # systemd-boot's loader interface variables
SPARE=0x120000000  # spare: 256M, offset auto -> right after bulk (512M at 4G)

SPARE_NS='  spare:
    size: 256M
    offset: auto
'

efivar() {  # efivar NAME: a UTF-16 string variable of systemd-boot's, as text (exit 1 when unset)
    [ -e "$EFIVARS/$1-$LOADER_GUID" ] || return 1
    python3 -c 'import sys; print(open(sys.argv[1], "rb").read()[4:].decode("utf-16-le").rstrip("\0"))' \
        "$EFIVARS/$1-$LOADER_GUID"
}

# the boot configuration, and what arms a trial on this layout
bootcfg() {
    local tag=$1
    case $LAYOUT in
    grub)
        ev "$tag-dropin" cat /etc/default/grub.d/99-pmemd.cfg
        ev "$tag-trial-script" cat /etc/grub.d/01_pmemd
        ev "$tag-grubenv" grub-editenv /boot/grub/grubenv list
        ev "$tag-grubcfg" grep -E '^[[:space:]]*(linux|set pmemd_args)[[:space:]=]' /boot/grub/grub.cfg
        ;;
    sdboot)
        ev "$tag-kernel-cmdline" cat /etc/kernel/cmdline
        ev "$tag-entries" grep -H -E '^(title|options) ' /boot/loader/entries/*.conf
        ev "$tag-trial-entry" cat /boot/loader/entries/pmemd-trial.conf
        ev "$tag-oneshot" efivar LoaderEntryOneShot
        ;;
    esac
}

evidence() {
    pmem_evidence "$1"
    # what `pmemd plan` says of the next boot once a trial is armed (each CLI run costs seconds here)
    [ "$1" != armed ] || ev "$1-plan-json" pmemd plan --json
    bootcfg "$1"
}

# install_unit NAME FLAG EXEC: a unit that runs EXEC in a trial boot (marker on the command
# line) while /etc/FLAG exists, after the nvdimm drivers and before pmemd
install_unit() {
    cat >"/etc/systemd/system/$1.service" <<EOF
[Unit]
Description=e2e: $1 in a pmemd trial boot
DefaultDependencies=no
ConditionKernelCommandLine=pmemd.trial=1
ConditionPathExists=/etc/$2
After=local-fs.target modprobe@nd_e820.service modprobe@nd_pmem.service
Before=pmemd.service

[Service]
Type=oneshot
ExecStart=$3

[Install]
WantedBy=multi-user.target
EOF
    touch "/etc/$2"
    systemctl enable "$1.service"
}

udevadm settle
ev uname uname -r
[ "$LAYOUT" = sdboot ] && ev entry-selected efivar LoaderEntrySelected
ev cmdline cat /proc/cmdline
ev uptime cat /proc/uptime
case $n in
1)
    install_package
    bootcfg pre
    write_config flag "$FAST_NS"
    wait_status 'trial boot pending*' 180 pending
    evidence armed
    journal armed
    echo reboot >"$HARNESS_NEXT"
    ;;
2)
    # The trial boot: verified and committed by the daemon's first pass.
    wait_status 'in sync: 1/1 namespaces mounted with DAX' 240 synced
    evidence committed
    journal committed
    # Crash the next trial boot before pmemd runs.
    # (the command line on the console first: the crashed boot leaves no other evidence)
    install_unit e2e-crash-trial e2e-crash-trial \
        "/bin/sh -c 'echo \"e2e trial boot: \$\$(cat /proc/cmdline)\" >/dev/console; sync; echo c >/proc/sysrq-trigger'"
    write_config flag "$FAST_NS" "$BULK_NS"
    wait_status 'trial boot pending*' 180 pending
    evidence armed
    echo reboot >"$HARNESS_NEXT"
    ;;
3)
    # The trial boot crashed; this boot is the committed one, by itself.
    wait_status 'trial boot failed*' 240 failed
    evidence failed
    journal failed
    ev failed-plan pmemd plan
    rm /etc/e2e-crash-trial
    ev retry pmemd apply --retry-trial
    evidence retried
    echo reboot >"$HARNESS_NEXT"
    ;;
4)
    wait_status 'in sync: 2/2 namespaces mounted with DAX' 240 synced
    evidence committed
    journal committed
    # In the next trial boot, spare's region loses its device before pmemd looks.
    cat >/usr/local/sbin/e2e-unbind-region <<'EOF'
#!/bin/sh
# unbind the nd region at physical address $1 from its driver once it has a namespace
for _ in $(seq 60); do
    for r in /sys/bus/nd/devices/region*; do
        [ "$(cat "$r/resource" 2>/dev/null)" = "$1" ] || continue
        ls -d "$r"/namespace*/block/* >/dev/null 2>&1 || continue
        echo "unbinding $(basename "$r") ($1)" >/dev/console
        echo "$(basename "$r")" >"$(readlink -f "$r/driver")/unbind"
        exit 0
    done
    sleep 0.5
done
exit 1
EOF
    chmod +x /usr/local/sbin/e2e-unbind-region
    install_unit e2e-unbind-spare e2e-unbind-spare "/usr/local/sbin/e2e-unbind-region $SPARE"
    write_config flag "$FAST_NS" "$BULK_NS" "$SPARE_NS"
    wait_status 'trial boot pending*' 180 pending
    evidence armed
    echo reboot >"$HARNESS_NEXT"
    ;;
5)
    # spare's region came up without its device: no commit.
    wait_status 'trial boot failed*' 300 failed
    evidence failed
    journal failed
    # `systemctl status` exits 3 for a finished oneshot; show gives its result and exit status
    ev unbind-unit systemctl show -p Result -p ExecMainStatus e2e-unbind-spare
    rm /etc/e2e-unbind-spare
    ev rollback pmemd rollback
    evidence rolledback
    echo reboot >"$HARNESS_NEXT"
    ;;
6)
    wait_status 'trial boot failed*' 240 final
    evidence final
    journal final
    ;;
esac
exit 0
