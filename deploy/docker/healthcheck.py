"""Container health check: exit 0 when a URL answers 2xx within the timeout, else 1.

The images have no curl; Docker's HEALTHCHECK and compose's healthchecks run
`python /usr/local/bin/latentq-healthcheck URL`.
"""

import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else "http://127.0.0.1:8000/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if 200 <= response.status < 300 else 1
    except (OSError, urllib.error.URLError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
