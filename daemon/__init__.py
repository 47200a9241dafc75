"""The refocusd service: runner loop, policy, ledger and job queue, writer, logging, CLI."""
