"""The job function of the native-RQ baseline.

This module imports nothing on purpose: a forking RQ worker imports a job's
module in every work horse that has not inherited it, so it must cost as
little as possible for the baseline to be the floor it claims to be.
"""


def noop() -> None:
    """Do nothing (the native counterpart of figway's ``noop`` node)."""
    return None
