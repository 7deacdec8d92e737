#!/bin/sh
# Start a QEMU guest whose NVDIMM is a file on the pmemd mount /pmem/vms (examples/qemu/pmem.yaml).
# pmem=on tells QEMU the file is on real (here: emulated) persistent memory, so it maps it with
# MAP_SYNC and skips msync; QEMU refuses pmem=on when the file is not on a DAX filesystem.
set -eu
img=${1:?usage: run-guest.sh DISK.qcow2}
backing=/pmem/vms/guest0.nvdimm
[ -e "$backing" ] || fallocate -l 4G "$backing"
exec qemu-system-x86_64 -machine pc,nvdimm=on -m 4G,slots=2,maxmem=12G -smp 2 \
    -object memory-backend-file,id=nv0,share=on,mem-path="$backing",size=4G,pmem=on,align=2M \
    -device nvdimm,id=nvdimm0,memdev=nv0 \
    -drive file="$img",if=virtio
