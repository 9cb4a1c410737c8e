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
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 1 50); do
  [ -S /var/run/libvirt/libvirt-sock ] && exit 0
  sleep 0.2
done
echo "libvirtd did not create its socket /var/run/libvirt/libvirt-sock" >&2
exit 1
