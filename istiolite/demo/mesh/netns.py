"""Linux network namespaces as "pods": create, wire, enter, intercept with iptables; remove.

Everything here acts only inside namespaces it created (named `ilmesh-<pid>-<name>`), so nothing
touches the host's own interfaces, routes or iptables. Deleting a namespace removes its
interfaces (a veth pair goes with either end) and its iptables rules (nat tables are per
namespace, for both the nf_tables and the legacy backends).

The test process enters a namespace per call, in a short-lived thread (`Netns.call`): a thread
has its own network namespace, so a socket made there belongs to the namespace for its whole life,
whichever thread uses it later. That is how a server is bound inside a namespace and how the
test's own client makes its connections as root from inside a "pod" (so iptables redirects them).
Child processes are started inside with `ip netns exec <name> ...` (`Netns.argv`), which also
bind-mounts the files of `/etc/netns/<name>/` over `/etc/` for them: a pod's own `/etc/hosts`.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from istiolite import iptables

T = TypeVar("T")

PREFIX = "ilmesh"
NETNS_DIR = Path("/var/run/netns")
ETC_NETNS_DIR = Path("/etc/netns")  # per-namespace /etc files for `ip netns exec`
_CLONE_NEWNET = 0x40000000
_SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")

# Istio's defaults (istio-iptables as injected by istio-init): the proxy's uid/gid and ports.
PROXY_UID = 1337
PROXY_GID = 1337
OUTBOUND_CAPTURE_PORT = 15001  # virtualOutbound
INBOUND_CAPTURE_PORT = 15006  # virtualInbound
INBOUND_EXCLUDED_PORTS = (15090, 15021, 15020)  # Prometheus, health, pilot-agent
HBONE_PORT = 15008


def which(tool: str) -> str | None:
    """A system tool, also from the sbin directories a non-login PATH may lack."""
    found = shutil.which(tool)
    if found:
        return found
    for directory in _SBIN:
        candidate = Path(directory) / tool
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def sbin_path() -> str:
    """PATH with the sbin directories a non-login shell may lack (ip, iptables-restore)."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join([*parts, *(d for d in _SBIN if d not in parts)])


def _run(argv: list[str], *, input: str | None = None, timeout: float = 30.0) -> str:
    env = {**os.environ, "PATH": sbin_path()}
    done = subprocess.run(
        argv, input=input, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _ip(*args: str) -> str:
    return _run([which("ip") or "ip", *args])


def unavailable_reason() -> str | None:
    """Why namespace tests cannot run here (None when they can): root, iproute2, iptables,
    setpriv, and the kernel letting us make a namespace and a nat rule inside it."""
    if not Path("/proc/self/ns/net").exists():
        return "needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root (network namespaces and iptables); CI runs `make test` as root"
    for tool in ("ip", "iptables-restore", "setpriv"):
        if which(tool) is None:
            return f"needs `{tool}` (make test installs iproute2/iptables when run as root)"
    probe = Netns(f"{PREFIX}-{os.getpid()}-probe")
    try:
        probe.create()
        # What interception needs: nat REDIRECT and the owner match, and setns for threads.
        probe.iptables_restore(
            "*nat\n-A OUTPUT -p tcp -m owner ! --uid-owner 1337 -j REDIRECT --to-ports 15001\n"
            "COMMIT\n"
        )
        probe.call(lambda: Path("/proc/self/net/dev").read_text())
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        return f"network namespaces or iptables unusable here: {err}"
    finally:
        probe.delete()
    return None


def reap_stale() -> list[str]:
    """Delete the namespaces, /etc/netns entries and temporary directories named
    `ilmesh-<pid>-...` that a process left when it died without cleaning up (that pid is gone).
    Processes still inside such a namespace were started with a parent-death signal and are
    gone with their parent."""
    removed = []
    for directory in (NETNS_DIR, ETC_NETNS_DIR, Path(tempfile.gettempdir())):
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            match = re.fullmatch(rf"{PREFIX}-(\d+)-.+", entry.name)
            if not match or Path(f"/proc/{match.group(1)}").exists():
                continue
            if directory == NETNS_DIR:
                Netns(entry.name).delete()
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            removed.append(str(entry))
    return removed


class Netns:
    """One named network namespace (`ip netns`), owned by the test that created it."""

    def __init__(self, name: str) -> None:
        if len(name) > 64 or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"bad namespace name {name!r}")
        self.name = name
        self.iptables_backend: str | None = None

    @classmethod
    def unique(cls, role: str) -> Netns:
        return cls(f"{PREFIX}-{os.getpid()}-{role}")

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    @property
    def etc(self) -> Path:
        return ETC_NETNS_DIR / self.name

    def write_hosts(self, entries: list[tuple[str, list[str]]]) -> Path:
        """The pod's own /etc/hosts (seen by processes started with `argv`)."""
        self.etc.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{ip}\t{' '.join(names)}" for ip, names in entries]
        hosts = self.etc / "hosts"
        hosts.write_text("\n".join(lines) + "\n")
        hosts.chmod(0o644)
        return hosts

    def create(self) -> Netns:
        _ip("netns", "add", self.name)
        self.ip("link", "set", "lo", "up")
        return self

    def delete(self) -> None:
        """Remove the namespace (idempotent). Its interfaces and iptables rules go with it once
        no process is left inside; callers stop their processes first."""
        if self.path.exists():
            _ip("netns", "delete", self.name)
        if self.etc.is_dir() and not self.etc.is_symlink():
            shutil.rmtree(self.etc, ignore_errors=True)

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    # --- doing things inside -------------------------------------------------------------

    def argv(self, *argv: str) -> list[str]:
        """Prefix for a child process that runs inside (ip netns exec execs it: same PID)."""
        return [which("ip") or "ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, input: str | None = None, timeout: float = 30.0) -> str:
        return _run(self.argv(*argv), input=input, timeout=timeout)

    def ip(self, *args: str) -> str:
        return _ip("-n", self.name, *args)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 30.0) -> T:
        """Run `fn(*args)` in a fresh thread that has entered this namespace; return its result
        or raise its exception. Sockets it creates stay in the namespace afterwards."""
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                _enter(self.path)
                outcome["value"] = fn(*args)
            except BaseException as err:
                outcome["error"] = err

        thread = threading.Thread(target=target, name=f"netns-{self.name}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"{fn!r} in {self.name} still running after {timeout}s")
        if "error" in outcome:
            raise outcome["error"]
        value: T = outcome["value"]
        return value

    def thread(self, fn: Callable[[], None], name: str) -> threading.Thread:
        """Start `fn()` in a daemon thread inside this namespace (a long-running client)."""

        def target() -> None:
            _enter(self.path)
            fn()

        thread = threading.Thread(target=target, name=f"{self.name}-{name}", daemon=True)
        thread.start()
        return thread

    # --- iptables --------------------------------------------------------------------------

    def iptables_restore(self, rules: str) -> str:
        """Load `iptables-restore` text (adding to what is there). Uses the system's default
        backend (nf_tables on current distributions) and falls back to the legacy one; the
        namespace keeps to the one that worked. Returns the command used."""
        candidates = [self.iptables_backend] if self.iptables_backend else [
            "iptables-restore", "iptables-legacy-restore",
        ]  # fmt: skip
        errors = []
        for tool in candidates:
            path = which(tool) if tool else None
            if path is None:
                continue
            try:
                self.run(path, "--noflush", input=rules)
            except RuntimeError as err:
                errors.append(str(err))
                continue
            self.iptables_backend = tool
            return path
        raise RuntimeError(f"iptables-restore failed in {self.name}: {'; '.join(errors)}")

    def iptables_save(self, table: str = "nat") -> str:
        save = (self.iptables_backend or "iptables-restore").replace("-restore", "-save")
        return self.run(which(save) or save, "-t", table)


def _enter(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        setns = getattr(os, "setns", None)  # Python 3.12+
        if setns is not None:
            setns(fd, _CLONE_NEWNET)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def veth(a: Netns, a_name: str, b: Netns, b_name: str) -> None:
    """A veth pair made directly inside the two namespaces (never in the host's), both ends up."""
    a.ip("link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b.name)
    a.ip("link", "set", a_name, "up")
    b.ip("link", "set", b_name, "up")


# istio-init's arguments as the injector writes them for a sidecar in REDIRECT mode.
ISTIO_INIT_ARGS = (
    "-p", str(OUTBOUND_CAPTURE_PORT), "-z", str(INBOUND_CAPTURE_PORT),
    "-u", str(PROXY_UID), "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*",
    "-d", ",".join(str(p) for p in INBOUND_EXCLUDED_PORTS),
)  # fmt: skip


def istio_iptables_rules(
    *,
    proxy_uid: int = PROXY_UID,
    proxy_gid: int = PROXY_GID,
    outbound_port: int = OUTBOUND_CAPTURE_PORT,
    inbound_port: int = INBOUND_CAPTURE_PORT,
    inbound_excluded: tuple[int, ...] = INBOUND_EXCLUDED_PORTS,
) -> str:
    """The nat rules istio-init installs for a sidecar in REDIRECT mode (with the defaults:
    `istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*'
    -d 15090,15021,15020`), as iptables-restore input: `istiolite iptables`' own rules.

    Outbound: every TCP connection made in the pod goes to 15001, except the proxy's own (owner
    uid or gid 1337), loopback traffic of the app, and 127.0.0.1. Inbound: every TCP connection
    arriving goes to 15006, except the excluded ports and HBONE (15008)."""
    return iptables.rules(
        iptables.Capture(
            outbound_port=outbound_port,
            inbound_port=inbound_port,
            proxy_uid=proxy_uid,
            proxy_gid=proxy_gid,
            exclude_inbound_ports=inbound_excluded,
        )
    )
