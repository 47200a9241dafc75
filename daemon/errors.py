"""Typed errors of the daemon's layers that the CLI reports (kept free of heavy imports)."""


class BackendUnavailable(RuntimeError):
    """The reconstruction backend cannot run jobs (Dask scheduler unreachable, no workers)."""
