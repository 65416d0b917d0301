"""Separate hosts on one machine: Linux network namespaces joined by a bridge.

Each :class:`Host` is a network namespace with its own loopback and one veth link to a
bridge in the root namespace, where the test itself runs (the operator's machine). A
process started on a host reaches the others only over that link, by their addresses, never
over a shared loopback; taking a host's link down cuts it off as a pulled cable would.
Making namespaces needs root (``CAP_NET_ADMIN``); :func:`can_make_hosts` says whether this
machine allows it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def can_make_hosts() -> str | None:
    """None when network namespaces can be made here, else why not (for a skip)."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"ffprobe{os.getpid() % 100000}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    """One network namespace: its name, its address on the bridge, its link's root-side end."""

    name: str
    address: str
    link: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    is_cut: bool = False

    def start(self, argv: list[str], env: dict, log: Path, user: str | None = None):
        """Start ``argv`` inside this host, its output in ``log``; stopped by :meth:`stop`."""
        prefix = ["ip", "netns", "exec", self.name]
        if user:
            prefix += ["runuser", "-u", user, "--"]
        with open(log, "w") as stream:
            process = subprocess.Popen(
                [*prefix, *argv], env=env, stdout=stream, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.processes.append(process)
        return process

    def run(self, argv: list[str], env: dict | None = None, user: str | None = None):
        """Run ``argv`` inside this host to its end; the completed process."""
        prefix = [
            "ip",
            "netns",
            "exec",
            self.name,
            *(["runuser", "-u", user, "--"] if user else []),
        ]
        return subprocess.run([*prefix, *argv], env=env, capture_output=True, text=True)

    def cut(self) -> None:
        """Take the host's link down: nothing reaches it or leaves it any more."""
        _ip("link", "set", self.link, "down")
        self.is_cut = True

    def stop(self, deadline: float | None = None) -> None:
        """Stop what was started on the host: SIGTERM, then SIGKILL to each process group
        (at once on a host cut off, whose processes cannot finish what they hold).

        Args:
            deadline: a ``time.monotonic()`` by which to kill what is left, the processes
                signalled already (:meth:`Network.close` signals every host first, then
                waits once); when None, signal them and allow 20 s.
        """
        if deadline is None:
            self.signal()
            deadline = time.monotonic() + 20
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait()

    def kill_the_rest(self) -> None:
        """SIGKILL whatever still runs in the namespace: processes that left the process
        groups started here (a launcher's workers live in sessions of their own) and would
        outlive the namespace otherwise."""
        listed = _ip("netns", "pids", self.name, check=False).stdout.split()
        for pid in listed:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)

    def signal(self) -> None:
        """Ask every process group on the host to stop (SIGKILL on a host cut off)."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9 if self.is_cut else 15)


class Network:
    """A bridge in the root namespace and hosts linked to it, removed by :meth:`close`.

    Args:
        names: the hosts to make, in order; they get .2, .3, ... of the subnet.
    """

    def __init__(self, names: list[str]) -> None:
        tag = os.getpid() % 10000
        self.subnet = f"10.{77 + tag % 100}.{tag % 250}"
        self.gateway = f"{self.subnet}.1"
        self.bridge = f"ffbr{tag}"
        self.hosts: dict[str, Host] = {}
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for number, name in enumerate(names, start=2):
            self.hosts[name] = self._add(f"ff{name}{tag}", f"{self.subnet}.{number}", number)

    def _add(self, namespace: str, address: str, number: int) -> Host:
        tag = os.getpid() % 10000
        outside, inside = f"ffv{tag}h{number}", f"ffv{tag}n{number}"
        _ip("netns", "add", namespace)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", namespace)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        inns = ("-n", namespace)
        _ip(*inns, "addr", "add", f"{address}/24", "dev", inside)
        _ip(*inns, "link", "set", inside, "up")
        _ip(*inns, "link", "set", "lo", "up")
        _ip(*inns, "route", "add", "default", "via", self.gateway)
        return Host(namespace, address, outside)

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def close(self) -> None:
        """Stop every host's processes, delete the namespaces, their links and the bridge."""
        for host in self.hosts.values():
            host.signal()
        deadline = time.monotonic() + 20
        for host in self.hosts.values():
            host.stop(deadline)
            host.kill_the_rest()
            _ip("link", "del", host.link, check=False)
            _ip("netns", "del", host.name, check=False)
        _ip("link", "del", self.bridge, check=False)
