"""What the builder puts into a Debian guest besides packages: files and a customize script.

Kept apart from the build mechanics so the guest's behaviour (DHCP on any ``en*`` NIC,
key-only root SSH, NoCloud-only cloud-init, serial console, fast boot) reads in one place.
"""

from __future__ import annotations

import shlex

BASE_PACKAGES = (
    "systemd-sysv",
    "udev",
    "linux-image-cloud-amd64",
    "grub-pc-bin",
    "openssh-server",
    "cloud-init",
    "cloud-guest-utils",
    "python3",
    "systemd-resolved",
    "sudo",
    "e2fsprogs",
    "ca-certificates",
    "curl",
    "iproute2",
    "less",
)

# Trimmed for size and boot speed; removed again after the build is not needed.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)

# Timers and services that only cost boot time in a short-lived lab VM.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "man-db.timer",
    "systemd-pstore.service",
    "cloud-init-hotplugd.socket",
)

# bookworm's cloud-init starts Python once per stage; NoCloud is found by the network stage
# as well, so skipping the local stage saves one start (~10 s under TCG). trixie's cloud-init
# runs all stages in one process whose stages signal each other: nothing to skip there.
MASKED_BY_RELEASE = {"bookworm": ("cloud-init-local.service",)}


def masked_units(release: str) -> tuple[str, ...]:
    """The units masked in an image of ``release``."""
    return MASKED_UNITS + MASKED_BY_RELEASE.get(release, ())


GRUB_MODULES = ("biosdisk", "part_msdos", "ext2", "search_fs_uuid", "configfile", "normal", "linux")

KERNEL_ARGS = "ro console=tty0 console=ttyS0,115200n8 net.ifnames=1"


def files(root_uuid: str) -> dict[str, str]:
    """Paths inside the guest (absolute) mapped to their contents."""
    return {
        "/etc/fstab": f"UUID={root_uuid} / ext4 defaults,errors=remount-ro 0 0\n",
        "/etc/hostname": "debian\n",
        "/etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
        "/etc/systemd/network/90-labdeploy-dhcp.network": _NETWORK,
        "/etc/systemd/system/systemd-networkd-wait-online.service.d/labdeploy.conf": _WAIT_ONLINE,
        "/etc/systemd/system/labdeploy-ssh-hostkeys.service": _SSH_KEYGEN,
        "/etc/ssh/sshd_config.d/50-labdeploy.conf": _SSHD,
        "/etc/cloud/cloud.cfg.d/90-labdeploy.cfg": _CLOUD_CFG,
        "/etc/cloud/ds-identify.cfg": "policy: enabled\n",
        "/boot/grub/grub.cfg": grub_cfg(root_uuid),
    }


def grub_cfg(root_uuid: str) -> str:
    """The boot menu: no wait, serial and VGA console, root found by filesystem UUID."""
    return (
        "set timeout=0\nset default=0\n"
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\nterminal_output serial console\n"
        f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
        "menuentry 'Debian GNU/Linux' {\n"
        f"  linux /vmlinuz root=UUID={root_uuid} {KERNEL_ARGS}\n"
        "  initrd /initrd.img\n"
        "}\n"
    )


def grub_early_cfg(root_uuid: str) -> str:
    """Embedded into core.img: find the root filesystem, then read /boot/grub/grub.cfg."""
    return f"search.fs_uuid {root_uuid} root\nset prefix=($root)/boot/grub\n"


def customize_script(root_uuid: str, core_img: str, overlay: str, masked: tuple[str, ...]) -> str:
    """Shell run on the host by mmdebstrap's customize hook; ``$1`` is the guest root.

    It copies ``overlay`` (the guest files, see :func:`files`) into the guest; besides
    enabling and trimming units it makes GRUB's ``core.img`` (with the guest's own grub-mkimage)
    and leaves it at ``core_img`` on the host, for the disk writer to put in the MBR gap.
    """
    mask = " ".join(masked)
    modules = " ".join(GRUB_MODULES)
    return f"""#!/bin/sh
set -eu
root="$1"
cp -a {shlex.quote(overlay + "/.")} "$root/"
chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service ssh.service \\
  labdeploy-ssh-hostkeys.service
chroot "$root" systemctl mask {mask}
ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
mkdir -p "$root/boot/grub/i386-pc"
cp -a "$root"/usr/lib/grub/i386-pc/. "$root/boot/grub/i386-pc/"
cat > "$root/tmp/labdeploy-early.cfg" <<'CFG'
{grub_early_cfg(root_uuid)}CFG
chroot "$root" grub-mkimage -O i386-pc -p "(hd0,msdos1)/boot/grub" -c /tmp/labdeploy-early.cfg \\
  -o /tmp/labdeploy-core.img {modules}
mv "$root/tmp/labdeploy-core.img" {shlex.quote(core_img)}
rm -f "$root/tmp/labdeploy-early.cfg"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
"""


_NETWORK = """[Match]
Name=en* eth*

[Network]
DHCP=yes

[DHCPv4]
UseDomains=yes
"""

# Online as soon as any NIC is up: a lab VM may have NICs on networks without DHCP.
_WAIT_ONLINE = """[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30
"""

# Fallback when cloud-init made no host keys (no seed): every VM still gets its own.
_SSH_KEYGEN = """[Unit]
Description=SSH host keys when cloud-init made none
After=cloud-init.service cloud-init-network.service
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
"""

_SSHD = """PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""

_CLOUD_CFG = """# labdeploy: NoCloud seed only, no network metadata probing.
datasource_list: [ NoCloud, None ]
disable_root: false
ssh_pwauth: false
ssh_deletekeys: true
# RSA host keys take seconds to make under TCG; every current client speaks ed25519/ecdsa.
ssh_genkeytypes: [ed25519, ecdsa]
# The image brings its own DHCP on every NIC (systemd-networkd); cloud-init writing a
# per-MAC config and restarting networkd would only cost boot time.
network: {config: disabled}
# Only the modules a lab VM uses: each one costs time on a 1-vCPU TCG guest.
cloud_config_modules: [timezone, runcmd]
cloud_final_modules: [package-update-upgrade-install, write-files-deferred, scripts-vendor,
  scripts-per-once, scripts-per-boot, scripts-per-instance, scripts-user, keys-to-console,
  final-message, power-state-change]
"""
