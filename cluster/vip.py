"""The virtual IP: the primary holds it and announces it with gratuitous ARP; every other
node makes sure it does not hold it. Optional operator hooks run on role changes."""

from __future__ import annotations

import abc
import ipaddress
import logging
import os
import shutil
import subprocess
from pathlib import Path

from node.errors import StrongroomError, ValidationError

log = logging.getLogger("strongroom.vip")


class VipError(StrongroomError):
    """Adding or removing the VIP failed; the message names the command's complaint."""


class Vip(abc.ABC):
    """One way of holding a virtual address."""

    @abc.abstractmethod
    def add(self) -> None:
        """Hold the address and announce it; idempotent."""

    @abc.abstractmethod
    def release(self) -> None:
        """Make sure this host does not hold the address; idempotent, never raises for an
        address that is already gone."""

    @abc.abstractmethod
    def held(self) -> bool:
        """Whether this host holds the address now."""


class NoVip(Vip):
    """A cluster without a VIP (clients use a load balancer or the node addresses)."""

    def add(self) -> None:
        return None

    def release(self) -> None:
        return None

    def held(self) -> bool:
        return False


def parse_vip(vip: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        iface = ipaddress.ip_interface(vip)
    except ValueError:
        raise ValidationError(f"VIP {vip!r} is not ADDRESS/PREFIX, e.g. 10.0.0.100/24") from None
    if "/" not in vip:
        raise ValidationError(f"VIP {vip!r} needs a prefix length, e.g. {vip}/24")
    return iface


class IpVip(Vip):
    """``ip addr add/del`` on a Linux interface, and ``arping -U`` to announce it."""

    def __init__(self, vip: str, interface: str) -> None:
        self.iface = parse_vip(vip)
        if not interface or "/" in interface or len(interface) > 15:
            raise ValidationError(f"network interface {interface!r} is not a valid name")
        self.interface = interface

    def _ip(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=10, check=False
        )

    def held(self) -> bool:
        out = self._ip("-o", "addr", "show", "dev", self.interface).stdout
        return f" {self.iface.ip}/" in out

    def add(self) -> None:
        if not self.held():
            proc = self._ip("addr", "add", str(self.iface), "dev", self.interface)
            if proc.returncode != 0 and "File exists" not in proc.stderr:
                raise VipError(f"cannot add VIP {self.iface}: {proc.stderr.strip()}")
            log.info("took the VIP", extra={"vip": str(self.iface)})
        self.announce()

    def announce(self) -> None:
        if self.iface.version != 4:
            return
        arping = shutil.which("arping") or "/usr/sbin/arping"
        if not os.path.exists(arping):
            log.warning("arping is not installed; neighbours learn the VIP move late")
            return
        # Unsolicited ARP, in the background: the loop does not wait for it.
        subprocess.Popen(  # noqa: S603 - fixed arguments
            [arping, "-U", "-c", "2", "-w", "2", "-I", self.interface, str(self.iface.ip)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def release(self) -> None:
        if not self.held():
            return
        proc = self._ip("addr", "del", str(self.iface), "dev", self.interface)
        if proc.returncode != 0 and self.held():
            raise VipError(f"cannot release VIP {self.iface}: {proc.stderr.strip()}")
        log.info("released the VIP", extra={"vip": str(self.iface)})


def make_vip(vip: str, interface: str) -> Vip:
    return IpVip(vip, interface) if vip else NoVip()


def run_hooks(hooks_dir: str, role: str, detail: str) -> None:
    """Run every executable in ``hooks_dir`` as ``HOOK ROLE DETAIL``, without waiting."""
    if not hooks_dir:
        return
    d = Path(hooks_dir)
    if not d.is_dir():
        return
    for hook in sorted(d.iterdir()):
        if hook.is_file() and os.access(hook, os.X_OK):
            try:
                subprocess.Popen(  # noqa: S603 - operator's own hook
                    [str(hook), role, detail],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                log.warning("role hook %s failed to start: %s", hook.name, exc.strerror)


__all__ = ["Vip", "IpVip", "NoVip", "VipError", "make_vip", "parse_vip", "run_hooks"]
