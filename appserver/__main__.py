"""`python -m appserver`: run the app server in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from appserver.app import AppServer
from appserver.config import Config, from_args

log = logging.getLogger("appserver")


async def serve(config: Config) -> None:
    server = AppServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    config = from_args(argv)
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        log.error("could not start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
