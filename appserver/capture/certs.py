"""`python -m appserver.certs [--confdir DIR]`: create mitmproxy's CA (if missing) and print its path."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mitmproxy.certs import CertStore

CA_BASENAME = "mitmproxy"  # mitmproxy's own name for its CA files
CA_KEY_SIZE = 2048


def ensure_ca(confdir: Path) -> Path:
    """The CA certificate's path, creating the CA as mitmproxy would on its first start."""
    confdir.mkdir(parents=True, exist_ok=True)
    CertStore.from_store(confdir, CA_BASENAME, CA_KEY_SIZE)
    return confdir / f"{CA_BASENAME}-ca-cert.pem"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appserver.certs", description=__doc__)
    parser.add_argument("--confdir", default=os.path.expanduser("~/.mitmproxy"), help="default %(default)s")
    args = parser.parse_args(argv)
    print(ensure_ca(Path(args.confdir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
