"""The room's bookkeeping for `studio serve`: the cap on visitors, each one's share of the cores, who they are.

No web code here: server.py asks `Sessions` whether someone may come in, and tells it when they leave.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from pathlib import Path

from studio.paths import VISITOR_ID

GIB = 1024**3
MEMORY_PER_SESSION = GIB  # a studio holds ~250 MB once torch is loaded, more while training (docs/CONTRACTS.md)
SESSIONS_PER_CORE = 2  # the studio's trainers run at a lower priority and share the cores (Sessions.share)


def default_max_sessions(cores: int, available_memory: int) -> int:
    """As many visitors as the machine holds: two a core, and a GiB of free memory each; at least one."""
    return max(1, min(SESSIONS_PER_CORE * cores, available_memory // MEMORY_PER_SESSION))


def available_memory() -> int:
    """Bytes of memory free for new processes (Linux MemAvailable; elsewhere all of it)."""
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def needs_token(host: str) -> bool:
    """Anything but the loopback interface can be reached from the room: only the invited may come in."""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return True


def invitation_token(host: str, given: str | None) -> str | None:
    """The token every request must show: the one given, else a new one when the room can reach the server."""
    if given is not None:
        if not given:
            raise ValueError("--token must not be empty")
        return given
    return secrets.token_urlsafe(12) if needs_token(host) else None


def new_visitor() -> str:
    return secrets.token_hex(8)


def is_visitor(value: str | None) -> bool:
    """A visitor id as handed out: it names a folder, so nothing else is taken from a browser."""
    return value is not None and VISITOR_ID.fullmatch(value) is not None


def room_host(host: str) -> str:
    """The address to give the room: the machine's own address when listening on every interface."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP: nothing is sent, the kernel only picks the outgoing interface
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostname()


class Sessions:
    """Who is in: at most `cap` live studios; each may train on `share` threads, written to `share_file` (which the
    visitors' studios read when a run starts: studio.cpu_threads.usable_cores)."""

    def __init__(self, cap: int, cores: int, share_file: Path):
        if cap < 1:
            raise ValueError(f"--max-sessions must be at least 1, not {cap}")
        self.cap = cap
        self.cores = cores
        self.share_file = share_file
        self.live = 0
        self._write_share()

    @property
    def full(self) -> bool:
        return self.live >= self.cap

    @property
    def share(self) -> int:
        """Training threads per live studio: the cores split between them."""
        return max(1, self.cores // max(1, self.live))

    def enter(self) -> bool:
        """Take a place if there is one; False when the studio is full."""
        if self.full:
            return False
        self.live += 1
        self._write_share()
        return True

    def leave(self) -> None:
        self.live -= 1
        self._write_share()

    def _write_share(self) -> None:
        temporary = self.share_file.with_name(self.share_file.name + ".tmp")
        temporary.write_text(str(self.share), encoding="ascii")
        os.replace(temporary, self.share_file)  # a studio reading it sees the old share or the new one, never half
