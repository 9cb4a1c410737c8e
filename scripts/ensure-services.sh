#!/usr/bin/env bash
# Start libvirtd and virtlogd: through systemd where it is PID 1, by hand where no init
# system runs (containers, CI sandboxes). Idempotent: running daemons are left alone.
set -euo pipefail
# Without udev (containers) /dev/kvm stays root-only; libvirt then distrusts its QEMU
# capability cache and re-probes QEMU on every call (30-60 s per domain define). Debian's
# udev rule would make it root:kvm 0660; do the same. Guests still use TCG where KVM hangs.
if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi
if [ -d /run/systemd/system ]; then
  systemctl start virtlogd libvirtd
  exit 0
fi
# cgroup v1 without systemd: libvirt makes cpuset/machine when the first domain starts, and a second
# domain started in the same instant can inherit its still-empty cpuset.mems and fail with "Unable to
# write to .../emulator/tasks: No space left on device" (seen on a fresh machine). Make it first.
cpuset=/sys/fs/cgroup/cpuset
if [ -f "$cpuset/cpuset.mems" ]; then
  mkdir -p "$cpuset/machine"
  [ -n "$(cat "$cpuset/machine/cpuset.cpus")" ] || cat "$cpuset/cpuset.cpus" > "$cpuset/machine/cpuset.cpus"
  [ -n "$(cat "$cpuset/machine/cpuset.mems")" ] || cat "$cpuset/cpuset.mems" > "$cpuset/machine/cpuset.mems"
fi
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 1 50); do
  [ -S /var/run/libvirt/libvirt-sock ] && exit 0
  sleep 0.2
done
echo "libvirtd did not create its socket /var/run/libvirt/libvirt-sock" >&2
exit 1
