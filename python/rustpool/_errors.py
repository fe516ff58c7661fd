"""Exceptions that need the main interpreter (they import multiprocessing's)."""

from concurrent.futures.process import BrokenProcessPool


class WorkerCrashed(BrokenProcessPool):
    """The worker process running this call died (a crash, ``os._exit``, a kill signal). Only this
    call fails: the pool starts a new worker process and goes on."""
