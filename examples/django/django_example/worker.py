"""django-example worker: a long-running process that logs a heartbeat to stdout."""

import os
import signal
import sys
import time

INTERVAL = float(os.environ.get("HEARTBEAT_INTERVAL", "3"))


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    greeting = os.environ.get("DJANGO_GREETING", "<unset>")
    beat = 0
    while True:
        beat += 1
        print(f"worker alive beat={beat} pid={os.getpid()} greeting={greeting}", flush=True)
        time.sleep(INTERVAL)


if __name__ == "__main__":
    main()
