# Shared shell of the pmemd cycle jobs (cycle.sh: BIOS GRUB; uefi-cycle.sh: GRUB EFI and
# systemd-boot). The test passes it as a --file; a job starts with
#     . "$HARNESS_FILES/lib.sh"
# Each boot saves its evidence as $HARNESS_OUT/b<boot>-<name> (+ .rc, + .secs); the tests assert
# on it. The jobs only drive the guest and wait; they never decide pass or fail, except that they
# exit non-zero when a wait times out, so the log shows where they stopped.
set -u
o=$HARNESS_OUT
n=$HARNESS_BOOT
export SYSTEMD_COLORS=0 SYSTEMD_PAGER= PAGER=cat LC_ALL=C.UTF-8
FAST=0x140000000   # fast: 1G at 5G (fixed offset)

# ev NAME CMD...: run CMD, keep stdout+stderr as b<boot>-NAME, its exit code as .rc and its
# duration in seconds as .secs
ev() {
    local name=$1 rc t0 t1
    shift
    t0=$(date +%s.%N)
    "$@" >"$o/b$n-$name" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    echo "$rc" >"$o/b$n-$name.rc"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", b - a }' >"$o/b$n-$name.secs"
    echo "=== [boot $n] $name: $* (exit $rc, $(cat "$o/b$n-$name.secs") s)"
    cat "$o/b$n-$name"
}

# wait_status GLOB SECONDS TAG: wait until pmemd's sd_notify STATUS matches GLOB; the STATUS is
# saved as b<boot>-status-TAG and the wait's duration as b<boot>-status-TAG.secs
wait_status() {
    local pat=$1 t=${2:-180} s="" t0
    t0=$(date +%s)
    for _ in $(seq "$t"); do
        s=$(systemctl show -p StatusText --value pmemd)
        # shellcheck disable=SC2254
        case $s in $pat)
            echo "$s" >"$o/b$n-status-$3"
            echo $(( $(date +%s) - t0 )) >"$o/b$n-status-$3.secs"
            echo "=== [boot $n] STATUS $3 after $(cat "$o/b$n-status-$3.secs") s: $s"
            return 0 ;;
        esac
        sleep 1
    done
    echo "TIMEOUT after ${t}s waiting for STATUS $pat; STATUS is: $s" | tee "$o/b$n-status-$3"
    exit 3
}

# the block device of the nd region starting at physical address $1
pmemdev() {
    local r b
    for r in /sys/bus/nd/devices/region*; do
        [ "$(cat "$r/resource")" = "$1" ] || continue
        for b in "$r"/namespace*/block/*; do [ -e "$b" ] && echo "/dev/${b##*/}"; done
    done
}

# the evidence of pmemd's state the tests read on every boot (the boot config is the job's own)
pmem_evidence() {
    local tag=$1
    ev "$tag-cmdline" cat /proc/cmdline
    ev "$tag-iomem" grep -A1 Persistent /proc/iomem
    ev "$tag-ndctl" ndctl list -RN
    ev "$tag-mountinfo" grep pmem /proc/self/mountinfo
    ev "$tag-systemctl-status" systemctl status pmemd --no-pager -n 0
    ev "$tag-status-json" pmemd status --json
    ev "$tag-state" cat /var/lib/pmemd/state.json
    ev "$tag-reboot-required" ls /run/reboot-required /run/reboot-required.pkgs
}

# synced_with_markers: wait until both namespaces are mounted with DAX (the job's evidence and
# journal saved as "after"), then write a marker file into each and keep its STATX_ATTR_DAX
synced_with_markers() {
    wait_status 'in sync: 2/2 namespaces mounted with DAX' 240 synced
    evidence after
    journal after
    for ns in fast bulk; do
        echo "written in boot $n" >"/pmem/$ns/marker"
        ev "$ns-dax" dax_attr "/pmem/$ns/marker"
    done
}

journal() {  # this boot's pmemd entries (JSON) as evidence
    ev "$1-journal" journalctl -b -u pmemd -o json --no-pager
}

# dax_attr FILE: STATX_ATTR_DAX of FILE as xfs_io reports it (independent of pmemd's own check)
dax_attr() {
    xfs_io -c 'statx -r' "$1" | grep -E '^stat\.attributes ='
}

checkpoint() {  # pack $o now: this boot may end in a reboot pmemd starts, not in harness-run's
    tar -C "$o" -cf "$HARNESS_DIR/out/.boot$n.tar.tmp" . && mv "$HARNESS_DIR/out/.boot$n.tar.tmp" "$HARNESS_DIR/out/boot$n.tar"
    sync
}

FAST_NS='  fast:
    size: 1G
    offset: 5G
    filesystem: {type: ext4, label: fast}
    mount: {path: /pmem/fast}
'
BULK_NS='  bulk:
    size: 512M
    offset: auto
    filesystem: {type: xfs, label: bulk}
    mount: {path: /pmem/bulk}
'
DEV_NS='  dev:
    size: 512M
    offset: auto
    mode: devdax
'

# write_config POLICY NAMESPACE_YAML...: a new /etc/pmem.yaml, saved the way editors do (rename);
# $BOOTLOADER, when set, goes in as settings.bootloader
write_config() {
    local policy=$1
    shift
    {
        printf 'version: 1\nsettings:\n  reboot: %s\n' "$policy"
        if [ -n "${BOOTLOADER:-}" ]; then printf '  bootloader: %s\n' "$BOOTLOADER"; fi
        printf 'namespaces:\n'
        printf '%s' "$@"
    } >/etc/pmem.yaml.new
    mv /etc/pmem.yaml.new /etc/pmem.yaml
}

# install_package: the project's .deb, installed with apt (its dependencies come from the image:
# the guest has no network); the service must come up enabled, active and in sync
install_package() {
    local deb
    deb=$(readlink -f "$HARNESS_FILES"/pmemd_*.deb)
    ev install apt-get install -y "$deb"
    ev is-enabled systemctl is-enabled pmemd
    ev is-active systemctl is-active pmemd
    wait_status 'in sync*' 60 empty
    ev etc-config cat /etc/pmem.yaml
    ev tmpfiles stat -c '%F %a %U:%G %n' /run/pmem.d /var/lib/pmemd
    # TRIAL_BOOT (set by a job before it sources this file): settings.trial_boot, from a drop-in,
    # so the line numbers of /etc/pmem.yaml stay what the tests expect
    if [ -n "${TRIAL_BOOT:-}" ]; then
        mkdir -p /etc/pmem.d
        printf 'version: 1\nsettings:\n  trial_boot: %s\n' "$TRIAL_BOOT" >/etc/pmem.d/40-e2e-trial-boot.yaml
    fi
}
