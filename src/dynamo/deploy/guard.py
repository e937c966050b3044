"""A tiny parent for each child of `dynamo serve`: `python -m dynamo.deploy.guard CMD ARGS...`.

The kernel's parent-death signal reaches only a direct child of the runner, so helpers a service
starts (engine subprocesses, the command under a shell) would outlive a `kill -9` of the runner.
The guard leads the replica's process group, runs the command in it, and when the runner dies
it SIGKILLs the whole group. Otherwise it is transparent: same output, same exit status.
Keep it free of heavy imports: it starts once per replica.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from types import FrameType

PR_SET_PDEATHSIG = 1
_CAUGHT = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _set_parent_death_signal(sig: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m dynamo.deploy.guard COMMAND [ARGS...]", file=sys.stderr)
        return 2
    runner = os.getppid()
    _set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != runner:  # the runner died before the signal was armed
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if os.getppid() != runner:  # orphaned: take the whole group down, ourselves included
            os.killpg(0, signal.SIGKILL)
        # Otherwise the runner signalled the group: the command got it too; wait for it.

    for sig in _CAUGHT:
        signal.signal(sig, on_signal)
    pid = os.fork()
    if pid == 0:
        for sig in _CAUGHT:
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            print(f"cannot start {argv[0]!r}: {exc.strerror or exc}", flush=True)
        os._exit(127)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):  # die the same way, so the runner sees the same status
        died_of = os.WTERMSIG(status)
        signal.signal(died_of, signal.SIG_DFL)
        os.kill(os.getpid(), died_of)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
