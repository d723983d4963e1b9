"""`python -m appserver doctor [--mode proxy|local] [--pid PID]` (`make doctor`): is interception working here?

It checks, one step at a time and in plain words, what a first run depends
on (Python and mitmproxy, the ports, mitmproxy's CA and how to trust it, what
local mode needs), then proves interception end to end: a canary WebSocket
and HTTP request through the chosen mode, seen arriving at an app server of
its own (proof.py). Each failed step says what to do. Exit status: 0 when
interception works, 1 when it does not.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from appserver.config import Config
from appserver.doctor import checks
from appserver.doctor.checks import Step


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m appserver doctor", description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("proxy", "local"), default="proxy", help="the capture mode to prove")
    p.add_argument("--pid", type=int, help="local mode: the SDK's process (checked; the proof captures a probe)")
    p.add_argument("--mitmproxy-confdir", default=os.path.expanduser("~/.mitmproxy"),
                   help="where mitmproxy keeps its CA (default %(default)s)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.ERROR, format="  (app server) %(levelname)s %(name)s: %(message)s")
    print(f"interception proxy doctor: {args.mode} mode")
    steps: list[Step] = [checks.python_version(), checks.mitmproxy_version(), checks.node_version()]
    steps += checks.ports(Config())
    steps += checks.certificate(Path(args.mitmproxy_confdir))
    steps += checks.local_mode(required=args.mode == "local")
    if args.pid is not None:
        steps.append(checks.process(args.pid))
    for step in steps:
        print("\n".join(step.lines()), flush=True)
    if any(step.ok is False for step in steps):
        print("interception cannot work until the failed steps are fixed: the end-to-end proof was not run")
        return 1
    from appserver.doctor.proof import prove  # imports the app server: only once the checks above passed

    print("proving it end to end (an app server, mitmdump and an upstream of its own, on loopback) …", flush=True)
    proof = asyncio.run(prove(args.mode, Path(args.mitmproxy_confdir)))
    for step in proof:
        print("\n".join(step.lines()), flush=True)
    if all(step.ok is not False for step in proof):
        print(f"interception works in {args.mode} mode")
        return 0
    print(f"interception does NOT work in {args.mode} mode")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
