"""The shipped default models: present, verified against their cards, small enough to ship."""

import pytest

from refocusd.models.store import check_model, default_folder

MAX_SHIPPED_BYTES = 20 * 2**20


@pytest.mark.parametrize("kind", ["classifier", "reconstructor"])
def test_shipped_model_is_verified_and_under_20_mb(kind):
    card = check_model("default", kind)  # resolves, parses the card, checks the SHA-256
    weights = default_folder(kind) / card.weights_file
    assert weights.stat().st_size <= MAX_SHIPPED_BYTES
    assert card.kind == kind and card.training.seed is not None and card.training.command
