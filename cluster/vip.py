"""The virtual IP: the primary holds it and announces it with gratuitous ARP; every other
node makes sure it does not hold it. Optional operator hooks run on role changes."""

from __future__ import annotations

import abc
import ipaddress
import logging
import os
import shutil
import socket
import struct
import subprocess
import time
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

    @abc.abstractmethod
    def hand_off(self, port: int, drain: float) -> int:
        """Release the address without cutting connections that are being served: stop
        taking new connections to it on ``port`` (their SYNs are dropped, so clients send
        them again a second later and reach the next holder), wait at most ``drain``
        seconds for the open ones to finish, then release it. Returns how many were still
        open when it went (0 when none was cut)."""


class NoVip(Vip):
    """A cluster without a VIP (clients use a load balancer or the node addresses)."""

    def add(self) -> None:
        return None

    def release(self) -> None:
        return None

    def held(self) -> bool:
        return False

    def hand_off(self, port: int, drain: float) -> int:
        return 0


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
            # A hand-off cut short (the process died mid-drain) must not leave this host
            # dropping new connections to the address it takes now.
            self._nft(f"table inet {NFT_TABLE} {{}}\ndelete table inet {NFT_TABLE}\n")
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

    def hand_off(self, port: int, drain: float) -> int:
        blocked = self._nft(self._block_rules(port))
        if not blocked:
            log.warning("cannot hold back new connections (nft); the VIP moves without a drain")
        try:
            deadline = time.monotonic() + drain
            still_open = open_connections(str(self.iface.ip), port)
            while still_open and time.monotonic() < deadline:
                time.sleep(0.02)
                still_open = open_connections(str(self.iface.ip), port)
            self.release()
        finally:
            if blocked:
                self._nft(f"delete table inet {NFT_TABLE}\n")
        return still_open

    def _block_rules(self, port: int) -> str:
        family = "ip" if self.iface.version == 4 else "ip6"
        return (
            f"table inet {NFT_TABLE} {{\n"
            "  chain input {\n"
            "    type filter hook input priority -10;\n"
            f"    {family} daddr {self.iface.ip} tcp dport {int(port)} "
            "tcp flags & (syn | ack) == syn drop\n"
            "  }\n"
            "}\n"
        )

    def _nft(self, script: str) -> bool:
        nft = shutil.which("nft") or "/usr/sbin/nft"
        if not os.path.exists(nft):
            return False
        proc = subprocess.run(  # noqa: S603 - fixed program, generated rules
            [nft, "-f", "-"], input=script, capture_output=True, text=True, timeout=10
        )
        if proc.returncode != 0:
            log.warning("nft failed: %s", proc.stderr.strip()[:200])
        return proc.returncode == 0


NFT_TABLE = "strongroom_vip_handoff"
_LIVE_TCP_STATES = ("01", "03")  # ESTABLISHED, SYN_RECV: a request may still be served


def open_connections(address: str, port: int) -> int:
    """TCP connections of this network namespace to ``address``:``port`` that may still be
    serving a request (read from /proc/net/tcp and tcp6)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        word = f"{struct.unpack('=I', socket.inet_aton(str(ip)))[0]:08X}"
        wanted = {f"{word}:{port:04X}", f"0000000000000000FFFF0000{word}:{port:04X}"}
    else:
        raw = socket.inet_pton(socket.AF_INET6, str(ip))
        words = struct.unpack("=4I", raw)
        wanted = {"".join(f"{w:08X}" for w in words) + f":{port:04X}"}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[1] in wanted and fields[3] in _LIVE_TCP_STATES:
                count += 1
    return count


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


__all__ = [
    "Vip",
    "IpVip",
    "NoVip",
    "VipError",
    "make_vip",
    "parse_vip",
    "run_hooks",
    "open_connections",
]
