"""Typed errors of the daemon's layers that the CLI reports (kept free of heavy imports)."""


from refocusd.config.errors import RefocusdError


class BackendUnavailable(RefocusdError, RuntimeError):
    """The reconstruction backend cannot run jobs (Dask scheduler unreachable, no workers)."""

    label = "reconstruction backend error"
