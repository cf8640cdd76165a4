"""The image's HEALTHCHECK: exit 0 when the router's or the gateway's /readyz answers 200.

Ports from the same settings the processes read (TIERWISE_SERVICE__HTTP_PORT, default 8080;
TIERWISE_GATEWAY__PORT, default 8000). Standard library only: it runs in the serving image.
"""

import os
import sys
import urllib.request


def main() -> int:
    ports = (os.environ.get("TIERWISE_SERVICE__HTTP_PORT", "8080"),
             os.environ.get("TIERWISE_GATEWAY__PORT", "8000"))
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return 0
        except OSError:
            continue
    return 1


if __name__ == "__main__":
    sys.exit(main())
