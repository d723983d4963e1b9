"""`make bench`: the app server's cost, as ratios to a direct connection measured in the same run.

Starts, each as a process of its own: an echo upstream (bench_echo.py), the
app server (``python -m appserver --no-mitmproxy``), a passthrough test suite
(bench_suite.py), the client that drives the workloads (bench_client.py) and,
with ``--mitmdump``, mitmdump with the redirector addon. Then, round after
round, runs every workload on every variant, the variants interleaved and in a
rotating order so that drift and warm-up fall on all of them alike:

* ``direct``: client ↔ echo upstream;
* ``suite``: client → app server → echo, every message transformed by the
  passthrough suite (``replace`` with the same data), in both directions;
* ``relay``: the same path with no suite attached;
* ``splice``: client → a bare TCP splice → echo (bench_splice.py: bytes
  joined, nothing parsed): the floor of any relay process on this machine,
  printed beside the ratio targets;
* ``mitm`` (``--mitmdump``): client → mitmdump (HTTP proxy) → app server → echo,
  with the suite; ``mitmrev`` (``--mitmdump``): client → mitmdump in reverse
  mode → echo, mitmproxy alone, for scale;
* ``window``: the suite answering every message with ``window: 16`` (SPEC
  Part 10); ``msgpack``: the suite answering every message over the
  ``jsonrpc-msgpack`` control channel;
* ``<variant>@old`` (``--compare REV``): the same variant through the app
  server of another commit, checked out beside this one (git worktree), run in
  the same rounds: the honest way to see whether a path got slower.

``--pin`` places the processes as the issue-24 figures were taken: the client
on CPU 0, every proxy, the suite and the upstream on CPU 1 (the layout changes
the ratios a lot).

Prints progress on stderr, then a table, the targets of issue 5 (met/missed)
and one JSON line on stdout. Every process it starts is stopped on exit,
Ctrl-C and errors included. docs/benchmark.md says how to read the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import math
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


class BenchError(RuntimeError):
    """A helper process failed or a job went wrong: the run stops."""


# -- workloads and variants ---------------------------------------------------


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    op: str  # latency | throughput
    kind: str  # text | binary
    size: int
    count: int
    conns: int = 1
    warmup: int = 0

    @property
    def round_trips(self) -> int:
        return self.count + self.warmup

    def job(self, timeout: float) -> dict[str, Any]:
        return {"op": self.op, "kind": self.kind, "size": self.size, "count": self.count,
                "conns": self.conns, "warmup": self.warmup, "timeout": timeout}  # fmt: skip


def workloads(quick: bool) -> list[Workload]:
    k64 = 64 * 1024
    if quick:
        return [
            Workload("lat100", "latency 100 B text", "latency", "text", 100, 500, warmup=50),
            Workload("tput1", "throughput 100 B, 1 conn", "throughput", "text", 100, 2_000),
            Workload("tput20", "throughput 100 B, 20 conns", "throughput", "text", 100, 2_000, conns=20),
            Workload("lat64k", "latency 64 KiB binary", "latency", "binary", k64, 50, warmup=5),
            Workload("tput64k", "throughput 64 KiB, 1 conn", "throughput", "binary", k64, 100),
            *HTTP_WORKLOADS(True),
        ]
    return [
        Workload("lat100", "latency 100 B text", "latency", "text", 100, 2_000, warmup=100),
        # tput1: 30,000 messages, about half a second, long enough for ratios of a few per cent to show;
        # tput20 stays at 500 a connection: issue 5's RSS target is defined on it
        Workload("tput1", "throughput 100 B, 1 conn", "throughput", "text", 100, 30_000),
        Workload("tput20", "throughput 100 B, 20 conns", "throughput", "text", 100, 10_000, conns=20),
        Workload("lat64k", "latency 64 KiB binary", "latency", "binary", k64, 200, warmup=10),
        Workload("tput64k", "throughput 64 KiB, 1 conn", "throughput", "binary", k64, 500),
        *HTTP_WORKLOADS(False),
    ]


def HTTP_WORKLOADS(quick: bool) -> list[Workload]:  # noqa: N802 - a table, as the lists above
    """Plain HTTP (issue 13): small GETs one after another, and a 1 MiB streamed response's first byte."""
    return [
        Workload("http100", "HTTP GET 100 B", "http_get", "http", 100, 100 if quick else 1_000, warmup=20),
        Workload("http1m", "HTTP 1 MiB stream, 1st byte", "http_stream", "http", 1 << 20, 10 if quick else 50,
                 warmup=2),
    ]


#: The variants plain HTTP jobs run on: the HTTP path has no per-frame dialogue, so the rule variants
#: would measure the relay again.
HTTP_VARIANTS = ("direct", "relay", "splice", "mitm", "mitmrev", "uts", "utsgo")  # not @old: 29 November had no HTTP

VARIANTS = ("direct", "suite", "relay", "pass", "observe", "untraced", "splice", "window", "msgpack", "uts", "mitm",
            "mitmrev", "utsgo")
DEFAULT_VARIANTS = VARIANTS[:-3]  # mitm and mitmrev with --mitmdump, utsgo with --uts-proxy
MITM_VARIANTS = ("mitm", "mitmrev")
#: Through a session made with uts-proxy's REST API (SPEC Part 8), no rules (uts-proxy's passthrough): on the app
#: server ("uts"), and on Ably's uts-proxy itself, a binary built from its source and named with --uts-proxy
#: ("utsgo"). The same client, the same upstream, the same session body.
UTS_VARIANTS = ("uts", "utsgo")
UTS_GO = "utsgo"
#: A variant through the app server of the --compare checkout ("suite@old").
OLD = "@old"
#: A bare TCP splice (bench_splice.py): what a relay process costs here before it does any work.
SPLICE = "splice"
#: Served by a second app server started with --no-trace (issue 14: what the trace costs): the catch-all rule.
UNTRACED = "untraced"
WITH_SUITE = ("suite", "mitm", "window", "msgpack", "suite@old")  # every message a transform round trip
#: The suite of each variant: the rules it adds (None: no suite at all), its window, its encoding.
SUITE_OF: dict[str, tuple[str, int, str]] = {
    "suite": ("", 1, "json"), "mitm": ("", 1, "json"), "pass": ("pass", 1, "json"),
    "observe": ("observe", 1, "json"), UNTRACED: ("pass", 1, "json"), "window": ("", 16, "json"),
    "msgpack": ("", 1, "msgpack"),
}  # fmt: skip
SUITE_RULES: dict[str, list[dict[str, Any]]] = {
    "": [],
    "pass": [{"match": {}, "action": {"type": "pass"}}],  # the dialogue off: rules decide everything
    "observe": [{"match": {}, "action": {"type": "observe"}}, {"match": {}, "action": {"type": "pass"}}],
}


# -- child processes ----------------------------------------------------------


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when bench.py dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """A process of ours; a line-oriented JSON helper when ``talks`` is true."""

    def __init__(self, name: str, args: list[str], log_dir: Path, talks: bool, cpu: int | None = None,
                 cwd: Path = ROOT, env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)

        def before_exec() -> None:
            _die_with_parent()
            if cpu is not None:  # --pin: this process and every thread it starts, on that CPU
                os.sched_setaffinity(0, {cpu})

        self.proc = subprocess.Popen(
            args, cwd=cwd, stdin=subprocess.PIPE if talks else subprocess.DEVNULL,
            stdout=subprocess.PIPE if talks else self._log, stderr=self._log,
            text=talks, start_new_session=True, preexec_fn=before_exec, env=env,
        )  # fmt: skip
        self.pid = self.proc.pid

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            state = "exited" if self.proc.poll() is not None else f"no answer within {timeout:g} s"
            raise BenchError(f"{self.name}: {state}; see {self.log_path}:\n{self.tail()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise BenchError(f"{self.name}: {answer['error']}")
        return answer

    def request(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        """Close its stdin (helpers exit on EOF), else signal it, else kill it."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(3)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def free_ports(n: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]


def wait_listening(child: Child, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise BenchError(f"{child.name} exited with {child.proc.returncode}:\n{child.tail()}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.05)
    raise BenchError(f"{child.name} is not listening on port {port} after {timeout:g} s:\n{child.tail()}")


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (proc(5): fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


# -- the harness ----------------------------------------------------------------


@dataclass
class Cell:
    """Everything measured for one (variant, workload), summed over the rounds."""

    rtt_us: list[float] = field(default_factory=list)
    last_us: list[float] = field(default_factory=list)  # a streamed response's last byte
    rates: list[float] = field(default_factory=list)  # messages/s, one per round
    cpu_ticks: int = 0
    suite_ticks: int = 0
    mitm_ticks: int = 0
    round_trips: int = 0
    transforms: int = 0


class Harness:
    def __init__(self, args: argparse.Namespace, log_dir: Path, stack: contextlib.ExitStack) -> None:
        self.args = args
        self.log_dir = log_dir
        self.stack = stack
        self.children: list[Child] = []
        self.suite_attached: tuple[Any, ...] | None = None  # its rules, window, encoding and control port

    def start(self, name: str, args: list[str], talks: bool, sig: int = signal.SIGTERM, cwd: Path = ROOT,
              env: dict[str, str] | None = None) -> Child:  # fmt: skip
        cpu = (0 if name == "client" else 1) if self.args.pin else None
        child = Child(name, args, self.log_dir, talks, cpu, cwd, env)
        self.stack.callback(child.stop, sig)  # stopped in reverse order of starting
        self.children.append(child)
        return child

    def start_all(self) -> None:
        py = sys.executable
        self.echo = self.start("echo", [py, str(SCRIPTS / "bench_echo.py")], talks=True)
        self.echo_port = self.echo.read(20)["port"]
        self.control_port, self.proxy_port, self.mitm_port, self.uts_api_port = free_ports(4)
        self.appserver = self.start("appserver", [
            py, "-m", "appserver", "--no-mitmproxy", "--control-host", HOST, "--proxy-host", HOST,
            "--control-port", str(self.control_port), "--proxy-port", str(self.proxy_port),
        ], talks=False)  # fmt: skip
        wait_listening(self.appserver, self.control_port)
        wait_listening(self.appserver, self.proxy_port)
        self.untraced: Child | None = None
        if UNTRACED in self.args.variant_list:
            self.untraced_control, self.untraced_proxy = free_ports(2)
            self.untraced = self.start("appserver-untraced", [
                py, "-m", "appserver", "--no-mitmproxy", "--no-trace", "--control-host", HOST, "--proxy-host", HOST,
                "--control-port", str(self.untraced_control), "--proxy-port", str(self.untraced_proxy),
            ], talks=False)  # fmt: skip
            wait_listening(self.untraced, self.untraced_control)
            wait_listening(self.untraced, self.untraced_proxy)
        self.splice: Child | None = None
        if SPLICE in self.args.variant_list:
            self.splice = self.start("splice", [py, str(SCRIPTS / "bench_splice.py"), str(self.echo_port)], talks=True)
            self.splice_port = self.splice.read(20)["port"]
        self.suite = self.start("suite", [py, str(SCRIPTS / "bench_suite.py")], talks=True)
        self.client = self.start("client", [py, str(SCRIPTS / "bench_client.py")], talks=True)
        self.client.request({"op": "ping"}, 20)
        self.mitmdump: Child | None = None
        if "mitm" in self.args.variant_list:
            self.mitmdump = self.start("mitmdump", mitmdump_args(self), talks=False)
            wait_listening(self.mitmdump, self.mitm_port, timeout=60)
        self.mitmrev: Child | None = None
        if "mitmrev" in self.args.variant_list:
            self.mitmrev_port = free_ports(1)[0]
            self.mitmrev = self.start("mitmdump-reverse", mitmdump_reverse_args(self), talks=False)
            wait_listening(self.mitmrev, self.mitmrev_port, timeout=60)
        self.uts_ports: dict[str, tuple[Child, int]] = {}  # variant → the server and its session's port
        if "uts" in self.args.variant_list:
            # An app server of its own, as uts-proxy is a process of its own: its session's trace (frames kept up
            # to 64 KiB each, as uts-proxy's log) stays out of the main one's memory figures.
            uts_control = free_ports(1)[0]
            uts_server = self.start("appserver-uts", [
                py, "-m", "appserver", "--no-mitmproxy", "--control-host", HOST, "--control-port", str(uts_control),
                "--proxy-host", HOST, "--proxy-port", "0", "--uts-port", str(self.uts_api_port),
            ], talks=False)  # fmt: skip
            wait_listening(uts_server, self.uts_api_port)
            self.uts_ports["uts"] = (uts_server, self.uts_session(self.uts_api_port))
        if UTS_GO in self.args.variant_list:
            api_port = free_ports(1)[0]
            # uts-proxy's one flag is its control API's port; each session listens on a port of its own.
            utsgo = self.start("uts-proxy", [self.args.uts_proxy, "-port", str(api_port)], talks=False)
            wait_listening(utsgo, api_port)
            self.uts_ports[UTS_GO] = (utsgo, self.uts_session(api_port))
        self.old: Child | None = None
        if self.args.compare:
            self.old_control, self.old_proxy = free_ports(2)
            checkout = self.args.compare_dir
            self.old = self.start("appserver-old", [
                py, "-m", "appserver", "--no-mitmproxy", "--control-host", HOST, "--proxy-host", HOST,
                "--control-port", str(self.old_control), "--proxy-port", str(self.old_proxy),
            ], talks=False, cwd=checkout, env={**os.environ, "PYTHONPATH": str(checkout)})  # fmt: skip
            wait_listening(self.old, self.old_control)
            wait_listening(self.old, self.old_proxy)

    def uts_session(self, api_port: int) -> int:
        """A session made through uts-proxy's API on ``api_port``, to the echo upstream (WebSocket and HTTP, no
        TLS, no rules: passthrough), for the whole run; its proxy port."""
        body = {"target": {"realtimeHost": f"{HOST}:{self.echo_port}", "restHost": f"{HOST}:{self.echo_port}",
                           "insecure": True}, "timeoutMs": 24 * 3600 * 1000}  # fmt: skip
        request = urllib.request.Request(f"http://{HOST}:{api_port}/sessions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                answer = json.load(response)
        except (OSError, ValueError) as exc:
            raise BenchError(f"could not make a uts-proxy session on port {api_port}: {exc}") from exc
        port = answer.get("proxy", {}).get("port") if isinstance(answer, dict) else None
        if not isinstance(port, int):
            raise BenchError(f"POST /sessions on port {api_port} answered without proxy.port: {answer!r}")
        return port

    def set_suite(self, suite: tuple[str, int, str] | None, control_port: int) -> None:
        """No suite (None), or one attached with these rules ("" — none: every message asked —, "pass",
        "observe"), this window and this encoding of the control channel."""
        wanted = None if suite is None else (*suite, control_port)
        if wanted == self.suite_attached:
            return
        if self.suite_attached is not None:
            self.suite.request({"op": "detach"}, 30)
            time.sleep(0.05)  # let the app server release the session before traffic flows
        if suite is not None:
            rules, window, encoding = suite
            answer = self.suite.request({"op": "attach", "url": f"ws://{HOST}:{control_port}/",
                                         "rules": SUITE_RULES[rules], "window": window, "encoding": encoding},
                                        30)  # fmt: skip
            if not answer.get("ok"):
                raise RuntimeError(f"the bench suite could not attach: {answer}")
        self.suite_attached = wanted

    def server_of(self, variant: str) -> tuple[Child, int, int]:
        """The app server a variant runs through: the process, its control port, its proxy port."""
        if variant == UNTRACED and self.untraced is not None:
            return self.untraced, self.untraced_control, self.untraced_proxy
        if variant == SPLICE and self.splice is not None:
            return self.splice, self.control_port, self.splice_port
        if variant == "mitmrev" and self.mitmrev is not None:
            return self.mitmrev, self.control_port, self.mitmrev_port
        if variant.endswith(OLD) and self.old is not None:
            return self.old, self.old_control, self.old_proxy
        if variant in self.uts_ports:
            server, port = self.uts_ports[variant]
            return server, self.control_port, port
        return self.appserver, self.control_port, self.proxy_port

    def endpoint(self, variant: str, workload: Workload | None = None) -> dict[str, Any]:
        if workload is not None and workload.kind == "http":
            path = "/http/small" if workload.op == "http_get" else "/http/big"
            if variant == "direct":
                return {"url": f"http://{HOST}:{self.echo_port}{path}"}
            if variant == "mitm":
                return {"url": f"http://{HOST}:{self.echo_port}{path}", "proxy": f"http://{HOST}:{self.mitm_port}"}
            if variant in (SPLICE, "mitmrev", *UTS_VARIANTS):
                return {"url": f"http://{HOST}:{self.server_of(variant)[2]}{path}"}
            stamps = {"Ably-Test-Host": f"{HOST}:{self.echo_port}", "Ably-Test-Proto": "http"}
            return {"url": f"http://{HOST}:{self.server_of(variant)[2]}{path}", "headers": stamps}
        path = "/bench?v=3&format=json"
        if variant == "direct":
            return {"url": f"ws://{HOST}:{self.echo_port}{path}"}
        if variant == "mitm":
            # aiohttp sends a proxied ws:// upgrade in absolute form with the ws scheme, which
            # mitmproxy refuses; with http:// the request line is one mitmproxy accepts.
            return {"url": f"http://{HOST}:{self.echo_port}{path}", "proxy": f"http://{HOST}:{self.mitm_port}"}
        if variant == "mitmrev":
            return {"url": f"ws://{HOST}:{self.mitmrev_port}{path}"}
        if variant in UTS_VARIANTS:  # the session's own port: it knows its upstream
            return {"url": f"ws://{HOST}:{self.server_of(variant)[2]}{path}"}
        headers = {"Ably-Test-Host": f"{HOST}:{self.echo_port}", "Ably-Test-Proto": "ws"}
        return {"url": f"ws://{HOST}:{self.server_of(variant)[2]}{path}", "headers": headers}

    def run_job(self, variant: str, workload: Workload, cell: Cell | None) -> None:
        server, control_port, _ = self.server_of(variant)
        self.set_suite(SUITE_OF.get(variant.removesuffix(OLD)), control_port)
        timeout = self.args.job_timeout
        answered = self.suite.request({"op": "stats"}, 10)["answered"]
        before = (cpu_ticks(server.pid), cpu_ticks(self.suite.pid), self.mitm_ticks())
        result = self.client.request({**workload.job(timeout), **self.endpoint(variant, workload)}, timeout + 10)
        after = (cpu_ticks(server.pid), cpu_ticks(self.suite.pid), self.mitm_ticks())
        if cell is None:
            return
        if "rtt_us" in result:
            cell.rtt_us += result["rtt_us"]
        if "last_us" in result:
            cell.last_us += result["last_us"]
        if "elapsed_s" in result:
            cell.rates.append(workload.count / result["elapsed_s"])
        if variant != "direct":
            cell.cpu_ticks += after[0] - before[0]
            cell.suite_ticks += after[1] - before[1]
            cell.mitm_ticks += after[2] - before[2]
        cell.round_trips += workload.round_trips
        cell.transforms += self.suite.request({"op": "stats"}, 10)["answered"] - answered

    def mitm_ticks(self) -> int:
        return cpu_ticks(self.mitmdump.pid) if self.mitmdump is not None else 0

    def pinned(self) -> dict[str, list[int]]:
        """Each process's CPUs, as the kernel has them (what --pin asked for, checked)."""
        return {c.name: sorted(os.sched_getaffinity(c.pid)) for c in self.children if c.proc.poll() is None}

    def rss_kb(self) -> int:
        return status_kb(self.appserver.pid, "VmRSS")


def mitmdump_reverse_args(h: Harness) -> list[str]:
    """mitmdump alone, in reverse mode to the echo upstream (WebSocket and HTTP), with nothing of ours."""
    binary = shutil.which("mitmdump", path=str(Path(sys.executable).parent)) or shutil.which("mitmdump")
    if binary is None:
        raise BenchError("--mitmdump: no mitmdump binary found")
    return [binary, "--mode", f"reverse:http://{HOST}:{h.echo_port}", "--listen-host", HOST,
            "--listen-port", str(h.mitmrev_port), "--set", "flow_detail=0", "--set", "termlog_verbosity=warn"]


def mitmdump_args(h: Harness) -> list[str]:
    """mitmdump in regular mode with the redirector, set up as appserver/launcher.py does."""
    binary = shutil.which("mitmdump", path=str(Path(sys.executable).parent)) or shutil.which("mitmdump")
    if binary is None:
        raise BenchError("--mitmdump: no mitmdump binary found")
    return [binary, "-s", str(ROOT / "redirector" / "addon.py"),
            "--set", "connection_strategy=lazy", "--set", "websocket=false",
            "--set", f"appserver_proxy={HOST}:{h.proxy_port}",
            "--set", f"appserver_control=ws://{HOST}:{h.control_port}/",
            "--listen-host", HOST, "--listen-port", str(h.mitm_port)]  # fmt: skip


def run_rounds(h: Harness, loads: list[Workload], variants: list[str],
               profiled: contextlib.AbstractContextManager[None]) -> tuple[dict[str, dict[str, Cell]], dict[str, Any]]:
    """Warm-up, the measured rounds (inside ``profiled``: py-spy records those only) and the churn."""
    cells = {v: {w.key: Cell() for w in loads} for v in variants}
    rss: dict[str, Any] = {"start_kb": h.rss_kb(), "after_20x500_kb": []}
    log(f"warm-up ({', '.join(variants)})")
    for variant in variants:
        for workload in (w for w in loads if runs_on(w, variant, h.args.variants is not None)):
            h.run_job(variant, warmup_of(workload), None)
    rss["after_warmup_kb"] = h.rss_kb()
    with profiled:
        measured_rounds(h, loads, variants, cells, rss)
    rss["end_kb"] = h.rss_kb()
    churned(h, variants, rss)
    rss["peak_kb"] = status_kb(h.appserver.pid, "VmHWM")
    return cells, rss


def measured_rounds(h: Harness, loads: list[Workload], variants: list[str], cells: dict[str, dict[str, Cell]],
                    rss: dict[str, Any]) -> None:  # fmt: skip
    for r in range(h.args.rounds):
        for i, workload in enumerate(loads):
            shift = (r + i) % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                if not runs_on(workload, variant, h.args.variants is not None):
                    continue
                log(f"round {r + 1}/{h.args.rounds}: {workload.label} [{variant}]")
                h.run_job(variant, workload, cells[variant][workload.key])
                if workload.conns == 20 and variant not in ("direct", SPLICE):  # the app server's RSS
                    rss["after_20x500_kb"].append(h.rss_kb())
                    if r == 0:  # before any 64 KiB job has raised the heap's high-water mark
                        rss["after_20x500_first_round_kb"] = max(rss.get("after_20x500_first_round_kb", 0), h.rss_kb())


def churned(h: Harness, variants: list[str], rss: dict[str, Any]) -> None:
    """The churn (full runs): connections opened and closed by the thousand, and the RSS they leave."""
    churn_variant = next((v for v in ("relay", "suite") if v in variants), None)
    if churn_variant is not None and not h.args.quick:
        count = CHURN_CONNECTIONS
        log(f"churn: {count} connections opened and closed [{churn_variant}]")
        # A shorter churn first: the allocator's pools for 25 concurrent connections are not growth.
        h.run_job(churn_variant, Workload("churn", "churn", "churn", "text", 4, count // 3), None)
        before = h.rss_kb()
        h.run_job(churn_variant, Workload("churn", "churn", "churn", "text", 4, count), None)
        rss["churn"] = {"connections": count, "before_kb": before, "after_kb": h.rss_kb()}


def runs_on(workload: Workload, variant: str, named: bool) -> bool:
    """Plain HTTP runs on the HTTP variants, and through the --compare commit only when --variants names it
    (the default, 29 November's, had no HTTP relay)."""
    return workload.kind != "http" or variant in HTTP_VARIANTS or (named and variant == f"relay{OLD}")


def warmup_of(w: Workload) -> Workload:
    return Workload(w.key, w.label, w.op, w.kind, w.size, max(w.conns, w.count // 20), w.conns, min(w.warmup, 5))


# -- figures, targets, report ---------------------------------------------------


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def summarise(cells: dict[str, dict[str, Cell]], loads: list[Workload]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for variant, by_load in cells.items():
        out[variant] = {}
        for w in loads:
            c = by_load[w.key]
            fig: dict[str, Any] = {"round_trips": c.round_trips}
            if c.rtt_us:
                fig.update(median_us=round(statistics.median(c.rtt_us), 1), p99_us=round(p99(c.rtt_us), 1),
                           samples=len(c.rtt_us))
            if c.last_us:
                fig.update(last_median_us=round(statistics.median(c.last_us), 1))
            if c.rates:
                fig.update(msgs_per_s=round(statistics.median(c.rates)), rounds=len(c.rates))
                if w.size >= 1024:
                    fig["mib_per_s"] = round(statistics.median(c.rates) * w.size / 2**20, 1)
            if variant != "direct" and c.round_trips:
                per_k = 1000 / c.round_trips * 1000 / CLK_TCK
                fig.update(cpu_ms_per_1k=round(c.cpu_ticks * per_k, 1))
                if variant in WITH_SUITE and w.kind != "http":  # plain HTTP has no per-message transforms
                    fig.update(suite_cpu_ms_per_1k=round(c.suite_ticks * per_k, 1), transforms=c.transforms,
                               all_transformed=c.transforms >= 2 * c.round_trips)
                if variant == "mitm":
                    fig.update(mitmdump_cpu_ms_per_1k=round(c.mitm_ticks * per_k, 1))
            out[variant][w.key] = fig
    return out


def ratios(figs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    direct = figs.get("direct", {})
    for variant in (v for v in figs if v != "direct"):
        out[variant] = {}
        for key, fig in figs[variant].items():
            base = direct.get(key, {})
            out[variant][key] = {m: round(fig[m] / base[m], 2)
                                 for m in ("median_us", "p99_us", "msgs_per_s", "last_median_us")
                                 if m in fig and base.get(m)}  # fmt: skip
    return out


# (label, variant, workload, metric, "<=" or ">=", limit, is_ratio)
TARGETS = [
    ("suite: median round trip, 100 B", "suite", "lat100", "median_us", "<=", 2.9, True),
    ("suite: p99 round trip, 100 B", "suite", "lat100", "p99_us", "<=", 8.0, True),
    ("suite: throughput, 1 conn", "suite", "tput1", "msgs_per_s", ">=", 0.2, True),
    ("suite: throughput, 20 conns", "suite", "tput20", "msgs_per_s", ">=", 0.25, True),
    ("suite: app-server CPU ms / 1,000 round trips (100 B)", "suite", "lat100", "cpu_ms_per_1k", "<=", 165, False),
    ("suite: median round trip, 64 KiB", "suite", "lat64k", "median_us", "<=", 5.0, True),
    ("relay: median round trip, 100 B", "relay", "lat100", "median_us", "<=", 1.5, True),
    ("relay: throughput, 1 conn", "relay", "tput1", "msgs_per_s", ">=", 0.5, True),
    ("relay: throughput, 20 conns", "relay", "tput20", "msgs_per_s", ">=", 0.5, True),
    # issue 12: rules
    ("catch-all pass rule: throughput, 1 conn", "pass", "tput1", "msgs_per_s", ">=", 0.5, True),
    ("catch-all pass rule: throughput, 20 conns", "pass", "tput20", "msgs_per_s", ">=", 0.45, True),
    ("observe-all rule: throughput, 1 conn", "observe", "tput1", "msgs_per_s", ">=", 0.35, True),
    ("observe-all rule: median round trip, 100 B", "observe", "lat100", "median_us", "<=", 2.5, True),
    # issue 13: plain HTTP
    ("HTTP through the app server: request rate, small GETs", "relay", "http100", "msgs_per_s", ">=", 0.3, True),
    ("HTTP through the app server: 1 MiB stream, time to first byte", "relay", "http1m", "median_us", "<=", 2.0,
     True),
]
#: Issue 24: against uts-proxy (Go) on its own ground. (label, variant, workload, metric, op, limit as a ratio to
#: direct, limit as a ratio to the splice of the same run); a limit of None is not set that way.
PEER_TARGETS = [
    ("WS round trip median, 100 B, no rules", "relay", "lat100", "median_us", "<=", 1.53, 1.17),
    ("WS round trip median, 100 B, catch-all pass rule", "pass", "lat100", "median_us", "<=", 1.58, 1.21),
    ("WS throughput, 1 conn, pass rule", "pass", "tput1", "msgs_per_s", ">=", 0.49, 0.54),
    ("WS throughput, 20 conns, pass rule", "pass", "tput20", "msgs_per_s", ">=", 0.29, 0.47),
    ("HTTP 1 MiB time to first byte", "relay", "http1m", "median_us", "<=", 2.82, 2.25),
    ("HTTP 1 MiB time to last byte", "relay", "http1m", "last_median_us", "<=", 2.82, 1.51),
    ("HTTP 100 B GETs, request rate", "relay", "http100", "msgs_per_s", ">=", 0.39, 0.45),
    ("suite, window 16: throughput, 1 conn", "window", "tput1", "msgs_per_s", ">=", 0.2, None),
    ("suite over msgpack: round trip median, 64 KiB", "msgpack", "lat64k", "median_us", "<=", 5.0, None),
]
#: Issue 24's targets against uts-proxy measured in the same run (--uts-proxy): ours as a multiple of its figure.
UTS_FACTORS = {
    "WS round trip median, 100 B, no rules": 0.9, "WS round trip median, 100 B, catch-all pass rule": 0.9,
    "WS throughput, 1 conn, pass rule": 1.4, "WS throughput, 20 conns, pass rule": 1.6,
    "HTTP 1 MiB time to first byte": 0.9, "HTTP 1 MiB time to last byte": 0.9, "HTTP 100 B GETs, request rate": 1.25,
}  # fmt: skip
#: Issue 24: app-server CPU per 1,000 small GETs (ms).
HTTP_CPU_LIMIT_MS = 240
RSS_LIMIT_MB = 60
TRACE_COST_LIMIT = 0.9  # tracing on costs at most 10 % of the throughput with it off
CHURN_CONNECTIONS = 3_000
CHURN_GROWTH_LIMIT_MB = 5


def check_targets(figs: dict[str, Any], rat: dict[str, Any], rss: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for label, variant, key, metric, op, limit, is_ratio in TARGETS:
        source = rat if is_ratio else figs
        value = source.get(variant, {}).get(key, {}).get(metric)
        if value is None:
            continue
        met = value <= limit if op == "<=" else value >= limit
        check = {"target": label, "value": value, "op": op, "limit": limit, "ratio": is_ratio, "met": met}
        floor = rat.get(SPLICE, {}).get(key, {}).get(metric) if is_ratio else None
        if floor is not None:
            check["splice"] = floor  # the same figure through a bare TCP splice
        checks.append(check)
    for label, variant, key, metric, op, limit, splice_limit in PEER_TARGETS:
        value = rat.get(variant, {}).get(key, {}).get(metric)
        if value is None:
            continue
        met = value <= limit if op == "<=" else value >= limit
        check = {"target": f"issue 24: {label}", "value": value, "op": op, "limit": limit, "ratio": True, "met": met}
        mine, floor = figs.get(variant, {}).get(key, {}).get(metric), figs.get(SPLICE, {}).get(key, {}).get(metric)
        if splice_limit is not None and mine and floor:
            of_splice = round(mine / floor, 2)
            check.update(of_splice=of_splice, splice_limit=splice_limit,
                         met_vs_splice=of_splice <= splice_limit if op == "<=" else of_splice >= splice_limit)
        theirs = figs.get(UTS_GO, {}).get(key, {}).get(metric)
        if label in UTS_FACTORS and mine and theirs:  # uts-proxy itself, in the same run
            of_uts, factor = round(mine / theirs, 2), UTS_FACTORS[label]
            check.update(of_uts=of_uts, uts_limit=factor,
                         met_vs_uts=of_uts <= factor if op == "<=" else of_uts >= factor)
        checks.append(check)
    for key, metric, op in (("lat100", "median_us", "<="), ("tput1", "msgs_per_s", ">="),
                            ("http100", "msgs_per_s", ">="), ("http100", "cpu_ms_per_1k", "<="),
                            ("http1m", "median_us", "<=")):  # fmt: skip
        ours, theirs = (figs.get(v, {}).get(key, {}).get(metric) for v in UTS_VARIANTS)
        if ours and theirs:  # through the same API, the same session: on uts-proxy's own ground
            value = round(ours / theirs, 2)
            checks.append({"target": f"issue 24: through uts-proxy's API, {key} {metric}, ours / uts-proxy's",
                           "value": value, "op": op, "limit": 1.0, "ratio": True,
                           "met": value <= 1.0 if op == "<=" else value >= 1.0})  # fmt: skip
    http_cpu = figs.get("relay", {}).get("http100", {}).get("cpu_ms_per_1k")
    if http_cpu is not None:
        checks.append({"target": "issue 24: app-server CPU ms / 1,000 small GETs", "value": http_cpu, "op": "<=",
                       "limit": HTTP_CPU_LIMIT_MS, "ratio": False, "met": http_cpu <= HTTP_CPU_LIMIT_MS})
    for key, metric in (("lat100", "median_us"), ("tput1", "msgs_per_s")):  # issue 24: no slower than before
        new, old = (figs.get(v, {}).get(key, {}).get(metric) for v in ("suite", f"suite{OLD}"))
        if new and old:
            value = round(new / old, 2)
            op, limit = ("<=", 1.0) if metric == "median_us" else (">=", 1.0)
            checks.append({"target": f"issue 24: suite path, {key} {metric}, now / --compare commit", "value": value,
                           "op": op, "limit": limit, "ratio": True,
                           "met": value <= limit if op == "<=" else value >= limit})  # fmt: skip
    if rss.get("after_20x500_first_round_kb"):
        value = round(rss["after_20x500_first_round_kb"] / 1024, 1)
        checks.append({"target": "RSS after the 20-conn job, round 1 (MB)", "value": value, "op": "<=",
                       "limit": RSS_LIMIT_MB, "ratio": False, "met": value <= RSS_LIMIT_MB})  # fmt: skip
    for key, conns in (("tput1", "1 conn"), ("tput20", "20 conns")):  # issue 14: what the trace costs
        traced = figs.get("pass", {}).get(key, {}).get("msgs_per_s")
        untraced = figs.get(UNTRACED, {}).get(key, {}).get("msgs_per_s")
        if traced and untraced:
            value = round(traced / untraced, 2)
            checks.append({"target": f"catch-all pass rule, tracing on / off: throughput, {conns}", "value": value,
                           "op": ">=", "limit": TRACE_COST_LIMIT, "ratio": True,
                           "met": value >= TRACE_COST_LIMIT})  # fmt: skip
    if "churn" in rss:
        growth = round((rss["churn"]["after_kb"] - rss["churn"]["before_kb"]) / 1024, 1)
        checks.append({"target": f"RSS growth over {rss['churn']['connections']:,} connections (MB)", "value": growth,
                       "op": "<=", "limit": CHURN_GROWTH_LIMIT_MB, "ratio": False,
                       "met": growth <= CHURN_GROWTH_LIMIT_MB})  # fmt: skip
    return checks


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value >= 100:
        return f"{value:,.0f}{unit}"
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value:,.1f}{unit}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


def table(figs: dict[str, Any], rat: dict[str, Any], loads: list[Workload]) -> str:
    variants = list(figs)
    others = [v for v in variants if v != "direct"]
    head = f"{'workload':<28}{'figure':<18}" + "".join(f"{v:>11}" for v in variants)
    head += "".join(f"{v + '/dir':>11}" for v in others)
    lines = [head, "-" * len(head)]
    rows = [("median_us", "median µs"), ("p99_us", "p99 µs"), ("last_median_us", "last byte µs"), ("msgs_per_s", "msgs/s"), ("mib_per_s", "MiB/s"),
            ("cpu_ms_per_1k", "CPU ms/1k RT"), ("suite_cpu_ms_per_1k", "suite CPU ms/1k"),
            ("mitmdump_cpu_ms_per_1k", "mitmdump CPU/1k")]  # fmt: skip
    for w in loads:
        first = True
        for metric, name in rows:
            values = [figs[v][w.key].get(metric) for v in variants]
            if all(v is None for v in values):
                continue
            label = w.label if first else ""
            first = False
            line = f"{label:<28}{name:<18}" + "".join(f"{fmt(v):>11}" for v in values)
            line += "".join(f"{fmt_ratio(rat[v][w.key].get(metric)):>11}" for v in others)
            lines.append(line)
    return "\n".join(lines)


def report(figs: dict[str, Any], rat: dict[str, Any], rss: dict[str, Any], checks: list[dict[str, Any]],
           loads: list[Workload], meta: dict[str, Any]) -> None:
    print(f"\nbenchmark {meta['date']} on {meta['machine']} ({meta['mode']}, {meta['rounds']} rounds"
          f"{', pinned: client CPU 0, the rest CPU 1' if meta.get('pinned') else ''}"
          f"{', compared with ' + meta['compare'] if meta.get('compare') else ''})\n")
    print(table(figs, rat, loads))
    after = rss["after_20x500_kb"]
    per_conn = next((f"{w.count // w.conns}" for w in loads if w.conns == 20), "?")
    after_20 = (f"after 20 conns x {per_conn} msgs {rss['after_20x500_first_round_kb'] / 1024:.1f} (round 1), "
                f"{max(after) / 1024:.1f} (max, later rounds follow 64 KiB jobs), ") if after else ""
    print(f"\napp-server RSS (MB): start {rss['start_kb'] / 1024:.1f}, after warm-up {rss['after_warmup_kb'] / 1024:.1f}, "
          f"{after_20}end {rss['end_kb'] / 1024:.1f}, peak (VmHWM) {rss['peak_kb'] / 1024:.1f}")
    if "churn" in rss:
        churn = rss["churn"]
        print(f"churn: {churn['connections']:,} connections opened and closed, RSS {churn['before_kb'] / 1024:.1f} → "
              f"{churn['after_kb'] / 1024:.1f} MB")  # fmt: skip
    for variant, by_load in figs.items():
        short = [k for k, f in by_load.items() if f.get("all_transformed") is False]
        if short:
            print(f"WARNING: {variant}: not every message was transformed in {', '.join(short)}")
    if meta["appserver_errors"]:
        print(f"WARNING: the app server logged {meta['appserver_errors']} ERROR lines (see its log)")
    print("\ntargets (issues 5, 12-14, 24):")
    for c in checks:
        value = f"{c['value']}{'×' if c['ratio'] else ''}"
        limit = f"{c['limit']}{'×' if c['ratio'] else ''}"
        floor = f"   (bare TCP splice: {c['splice']}×)" if "splice" in c else ""
        if "of_splice" in c:
            verdict = "met" if c["met_vs_splice"] else "MISSED"
            floor = f"   {c['of_splice']}× the splice {c['op']} {c['splice_limit']}×: {verdict}"
        if "of_uts" in c:
            verdict = "met" if c["met_vs_uts"] else "MISSED"
            floor += f"; {c['of_uts']}× uts-proxy {c['op']} {c['uts_limit']}×: {verdict}"
        print(f"  {'met   ' if c['met'] else 'MISSED'}  {c['target']:<55} {value:>9} {c['op']} {limit}{floor}")
    print(json.dumps({"bench": "appserver", **meta, "figures": figs, "ratios": rat, "rss": rss, "targets": checks}))


# -- main -----------------------------------------------------------------------


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: a few hundred messages per job, 1 round")
    p.add_argument("--rounds", type=int, help="rounds of every job on every variant (default 3; 1 with --quick)")
    p.add_argument("--mitmdump", action="store_true", help="add the variants through mitmdump + the app server (mitm) "
                   "and through mitmdump alone in reverse mode (mitmrev)")
    p.add_argument("--pin", action="store_true", help="the client on CPU 0; every proxy, the suite and the upstream "
                   "on CPU 1 (the placement of issue 24's figures)")
    p.add_argument("--compare", metavar="REV", help="also run suite and relay through the app server of commit REV "
                   "(a git worktree beside this checkout), as suite@old and relay@old (any VARIANT@old when named)")
    p.add_argument("--uts-proxy", metavar="BINARY", help="add Ably's uts-proxy (a binary built from its Go source) "
                   "as the utsgo variant, beside uts (the app server through the same API)")
    p.add_argument("--variants", help=f"comma-separated subset of {','.join(DEFAULT_VARIANTS)}[,mitm,mitmrev]"
                   "[,utsgo with --uts-proxy][,VARIANT@old with --compare]")
    p.add_argument("--workloads", help="comma-separated subset of lat100,tput1,tput20,lat64k,tput64k,http100,http1m")
    p.add_argument("--py-spy", metavar="FILE", help="record the app server with py-spy (after the warm-up) to FILE "
                   "(.svg: flame graph, .txt: collapsed stacks, .json: speedscope)")
    p.add_argument("--job-timeout", type=float, default=120.0, help="seconds one job may take (default 120)")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    chosen = args.variants.split(",") if args.variants else [
        *DEFAULT_VARIANTS, *(MITM_VARIANTS if args.mitmdump else ()), *((UTS_GO,) if args.uts_proxy else ()),
        *((f"suite{OLD}", f"relay{OLD}") if args.compare else ())]  # pass@old when named: 29 November had no rules
    unknown = {v for v in chosen if v.removesuffix(OLD) not in VARIANTS}
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}")
    if any(v in MITM_VARIANTS for v in chosen) and not args.mitmdump:
        p.error("the mitm and mitmrev variants need --mitmdump")
    if UTS_GO in chosen and not args.uts_proxy:
        p.error("the utsgo variant needs --uts-proxy BINARY")
    if args.uts_proxy and shutil.which(args.uts_proxy) is None:
        p.error(f"--uts-proxy: {args.uts_proxy!r} is not an executable")
    if any(v.endswith(OLD) for v in chosen) and not args.compare:
        p.error("a VARIANT@old needs --compare REV")
    args.variant_list = chosen
    return args


@contextlib.contextmanager
def py_spy(h: Harness, path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if binary is None:
        raise BenchError("--py-spy: py-spy is not installed (pip install py-spy)")
    fmt_of = {".svg": "flamegraph", ".txt": "raw", ".json": "speedscope"}
    targets = [(h.appserver, path)]
    if h.old is not None:  # --compare: the other commit's app server too, beside it (FILE.old.EXT)
        targets.append((h.old, str(Path(path).with_suffix(".old" + Path(path).suffix))))
    recorders = [(h.start(f"py-spy-{n}", [binary, "record", "--pid", str(child.pid), "--rate", "250", "--nonblocking",
                                            "--format", fmt_of.get(Path(out).suffix, "flamegraph"), "-o", out],
                          talks=False), out) for n, (child, out) in enumerate(targets)]  # fmt: skip
    time.sleep(1)  # attached before the first measured job
    yield
    for recorder, out in recorders:
        recorder.stop(signal.SIGINT, grace=30)  # py-spy writes its output on SIGINT
        log(f"py-spy profile written to {out}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loads = workloads(args.quick)
    if args.workloads:
        keys = args.workloads.split(",")
        loads = [w for w in loads if w.key in keys]
    # Ctrl-C and SIGTERM unwind through the ExitStack, which stops every child.
    # (SIGINT too: a shell starts background jobs with it ignored.)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    with contextlib.ExitStack() as stack:
        h = Harness(args, log_dir, stack)
        try:
            args.compare_dir = worktree(args.compare, log_dir, stack) if args.compare else None
            h.start_all()
            log(f"echo :{h.echo_port}, app server pid {h.appserver.pid} (control :{h.control_port}, "
                f"proxy :{h.proxy_port}){f', mitmdump :{h.mitm_port}' if args.mitmdump else ''}")
            pinned = h.pinned() if args.pin else None
            cells, rss = run_rounds(h, loads, args.variant_list, py_spy(h, args.py_spy))
            errors = sum(" ERROR " in line for line in h.appserver.log_path.read_text(errors="replace").splitlines())
        except BenchError as exc:
            log(f"failed: {exc}\n(the processes' logs are kept in {log_dir})")
            return 1
        except KeyboardInterrupt:
            log("interrupted: stopping every process")
            return 130
    shutil.rmtree(log_dir, ignore_errors=True)
    figs = summarise(cells, loads)
    rat = ratios(figs)
    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine(),
            "mode": "quick" if args.quick else "full", "rounds": args.rounds, "pinned": pinned,
            "compare": args.compare,
            "seconds": round(time.monotonic() - started, 1), "appserver_errors": errors}  # fmt: skip
    report(figs, rat, rss, check_targets(figs, rat, rss), loads, meta)
    return 0


def worktree(rev: str, log_dir: Path, stack: contextlib.ExitStack) -> Path:
    """A checkout of commit ``rev`` beside this one (git worktree, detached), removed at exit."""
    path = log_dir / "old"
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=ROOT,
                           capture_output=True, text=True)  # fmt: skip
    if found.returncode != 0:
        raise BenchError(f"--compare {rev}: no such commit in {ROOT}")
    made = subprocess.run(["git", "worktree", "add", "--detach", str(path), found.stdout.strip()], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        raise BenchError(f"--compare {rev}: git worktree add failed: {made.stderr.strip()}")
    stack.callback(subprocess.run, ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT,
                   capture_output=True)  # fmt: skip
    log(f"--compare: commit {found.stdout.strip()[:10]} checked out in {path}")
    return path


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    return f"{model or platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main())
