"""Durable state: the ledger (schema and migrations, runs and frames, the job queue, queries)."""
