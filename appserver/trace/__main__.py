"""A trace as a timeline for people: ``python -m appserver.trace FILE``.

FILE is what ``exportTrace {format: "jsonl"}`` gave (or the pytest plugin
wrote), or the JSON of a ``getTrace`` result; ``-`` reads standard input.
One line per event, its time from the first event, the connection (c1, c2 …
in order of appearance), the direction, what it was, and what the proxy did::

    +12.345 ms  c1 → server  MESSAGE ch=room  [rule r2: drop]
"""

from __future__ import annotations

import argparse
import sys

from appserver.trace.view import lines, read_events


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m appserver.trace", description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="a JSON Lines trace (exportTrace), a getTrace result as JSON, or - for stdin")
    p.add_argument("--connection", metavar="ID", help="only this connection's (or HTTP exchange's) events")
    args = p.parse_args(argv)
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        events = read_events(text)
    except ValueError as exc:
        print(f"{args.file} is not a trace: {exc}", file=sys.stderr)
        return 2
    for line in lines(events, args.connection):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
