"""What refocusd writes: the reconstruction worker, writer, provenance, spooled frames, Dask."""
