"""The refocusd service, in layers: core/ (the loop), state/ (the ledger), output/ (what is
written), ops/ (running as a service), report/ and cli/; vocabulary.py names a frame's fate,
factories.py builds the parts, service.py wires one run."""
