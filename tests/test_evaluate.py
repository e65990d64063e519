"""pass@k and token-budget micro-batches, by hand."""

import pytest

from critique_rl.batching import pad_sequences, token_budget_microbatches
from critique_rl.evaluate import pass_at_k


def test_unbiased_pass_at_k_by_hand():
    # n=8, c=2, k=4: 1 - C(6,4)/C(8,4) = 1 - 15/70
    assert pass_at_k(8, 2, 4) == pytest.approx(1 - 15 / 70)
    assert pass_at_k(8, 0, 4) == 0.0 and pass_at_k(8, 5, 4) == 1.0
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)


def test_microbatches_respect_the_token_budget_and_cover_every_sequence():
    lengths = [30, 5, 12, 12, 40, 7, 7, 7]
    batches = token_budget_microbatches(lengths, max_tokens=40)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(len(b) * max(lengths[i] for i in b) <= 40 for b in batches)


def test_pad_sequences_masks_only_completion_tokens():
    ids, attn, comp = pad_sequences([[5, 6], [7]], [[8, 9, 1], [1]], pad_id=0)
    assert ids.tolist() == [[5, 6, 8, 9, 1], [7, 1, 0, 0, 0]]
    assert attn.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert comp.tolist() == [[0, 0, 1, 1, 1], [0, 1, 0, 0, 0]]
