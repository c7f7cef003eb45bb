"""Small helpers for tests that watch something happen in another process."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30, interval: float = 0.1, message: str = "") -> T:
    """Calls predicate until it returns something truthy, and returns that; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value: {result!r})")
        time.sleep(interval)


def stop_process(process, timeout: float = 10) -> None:
    """SIGTERM (a warm shutdown: a worker finishes the task at hand), then SIGKILL after `timeout` s."""
    import signal
    import subprocess

    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_in_threads(target: Callable[[], object], count: int = 2) -> None:
    """Run `target` in `count` threads at once and wait for all (the target waits on its own barrier)."""
    import threading

    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
