"""`python -m appserver.certs [--confdir DIR]`: kept where it always was; the code is in
appserver/capture/certs.py."""

import sys

from appserver.capture.certs import main

if __name__ == "__main__":
    sys.exit(main())
