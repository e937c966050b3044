"""Child processes for runtime integration tests: `python child.py <mode> [args]`.

Each mode prints `READY ...` once it is set up, then runs until killed (or signalled).
"""

from __future__ import annotations

import asyncio
import os
import sys

from dynamo.runtime.config import RuntimeConfig, resolve
from dynamo.runtime.discovery.factory import make_discovery


async def register(key: str) -> None:
    """Put `key` in the discovery backend named by the environment, then sleep."""
    discovery = make_discovery(resolve(RuntimeConfig))
    await discovery.start()
    await discovery.put(key, {"pid": os.getpid()})
    print("READY", os.getpid(), flush=True)
    await asyncio.Event().wait()


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "register":
        asyncio.run(register(*args))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
