"""A stand-in service for runner tests: `python3 _fake_service.py MODE NAME`.

serve: print a ready line, exit 0 on SIGTERM.  crash: print and exit 3.
stubborn: ignore SIGTERM.  family: start a grandchild `sleep` in the same process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def main() -> None:
    mode, name = sys.argv[1], sys.argv[2]
    info = f"pid={os.getpid()} ns={os.environ.get('DYN_NAMESPACE')}"
    if mode == "crash":
        print(f"{name} crashing {info}", flush=True)
        sys.exit(3)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if mode == "family":
        child = subprocess.Popen(["sleep", "1000"])
        info += f" grandchild={child.pid}"
    print(f"{name} up {info} control={os.environ.get('DYN_SERVE_CONTROL')}", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
