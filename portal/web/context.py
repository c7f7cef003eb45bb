"""Template context every page gets."""

from vms import clock


def sandbox_clock(request) -> dict:
    """The simulated now in sandbox mode (None in real time), for the top bar; read from the cache."""
    return {"sandbox_now": clock.simulated_now()}
