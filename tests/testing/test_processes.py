"""The test launchers fail fast, with the exit code and the child's last lines, when a child
dies while a test waits on it (a test once waited 600 s on a worker that had exited at once)."""

from __future__ import annotations

import asyncio
import re
import signal

import pytest

from dynamo.testing.processes import ChildCrashedError, Procs, crashed, mocker_args, read_until


@pytest.mark.parametrize(
    ("returncode", "expected"),
    [
        (None, False),  # still running
        (0, False),  # a clean exit (a drained worker)
        (-signal.SIGKILL, False),  # what a test sends to kill a worker
        (-signal.SIGTERM, False),
        (1, True),  # an exception
        (2, True),  # argparse / a config error
        (-signal.SIGSEGV, True),
        (-signal.SIGABRT, True),
    ],
)
def test_what_counts_as_a_crash(returncode: int | None, expected: bool) -> None:
    assert crashed(returncode) is expected


async def test_waiting_for_instances_fails_at_once_when_a_worker_exits(procs: Procs) -> None:
    url = await procs.frontend()
    worker = await procs.spawn("dynamo.mocker", "--model-path", "/nonexistent/model")
    procs.drain(worker)
    began = asyncio.get_running_loop().time()
    with pytest.raises(ChildCrashedError) as caught:
        await procs.wait_for_instances(url, 1, timeout_s=120)
    waited_s = asyncio.get_running_loop().time() - began
    message = str(caught.value)
    assert f"child {worker.pid} (dynamo.mocker --model-path /nonexistent/model) exited with 2" in (
        message
    )
    assert "--model-path '/nonexistent/model': not a model directory" in message
    print(f"crash noticed {waited_s:.2f} s after the wait began (timeout was 120 s)")


async def test_an_undrained_child_s_output_is_in_the_message(procs: Procs) -> None:
    url = await procs.frontend()
    await procs.spawn("dynamo.mocker", "--model-path", "/nonexistent/model")  # nobody reads it
    with pytest.raises(ChildCrashedError, match="not a model directory"):
        await procs.wait_for_instances(url, 1, timeout_s=120)


async def test_a_worker_the_test_kills_is_not_a_crash(procs: Procs) -> None:
    url = await procs.frontend()
    worker = await procs.spawn(*mocker_args(model_name="tiny"))
    procs.drain(worker)
    await procs.wait_for_instances(url, 1)
    procs.kill_group(worker)
    await worker.wait()
    assert await procs.wait_for_instances(url, 0) == []


async def test_read_until_names_the_exit_code(procs: Procs) -> None:
    worker = await procs.spawn("dynamo.mocker", "--model-path", "/nonexistent/model")
    with pytest.raises(ChildCrashedError, match=r"exited with 2 before b'\(never\)'"):
        await read_until(worker, re.compile(rb"(never)"))
