"""`python -m appserver.transparent show|remove USER`: kept where it always was; the code is in
appserver/capture/transparent.py."""

import sys

from appserver.capture.transparent import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
