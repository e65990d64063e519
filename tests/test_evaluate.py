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


def test_pass_at_every_k_from_the_same_samples_by_hand():
    from types import SimpleNamespace

    from critique_rl.evaluate import pass_ks, sampled_pass_at_k, sampled_pass_at_ks
    from critique_rl.rollout.base import SamplingParams

    # Two problems, n = 4 samples each: problem 0 has 2 correct ("ok"), problem 1 has 1.
    texts = [["ok", "no", "ok", "no"], ["no", "no", "no", "ok"]]

    class Engine:
        calls = 0

        def generate(self, prompts, n, params):
            Engine.calls += 1
            assert n == 4 and len(prompts) == 2
            return [[SimpleNamespace(text=t) for t in row] for row in texts]

    def reward(problems, completions):
        return [1.0 if c == "ok" else 0.0 for c in completions]

    params = SamplingParams(8, 1.0, 1.0)
    ks = pass_ks(4, 3)
    assert ks == [1, 2, 3, 4]                  # 8 and 16 need more than 4 samples; eval.pass_k = 3 is kept
    got = sampled_pass_at_ks(Engine(), ["p0", "p1"], [0, 1], reward, 4, ks, params)
    # pass@1 = (2/4 + 1/4) / 2; pass@2 = ((1 - C(2,2)/C(4,2)) + (1 - C(3,2)/C(4,2))) / 2 = (5/6 + 1/2) / 2;
    # pass@3 = ((1 - 0) + (1 - C(3,3)/C(4,3))) / 2 = (1 + 3/4) / 2; pass@4 = 1
    assert got == pytest.approx({1: 3 / 8, 2: (5 / 6 + 1 / 2) / 2, 3: (1 + 3 / 4) / 2, 4: 1.0})
    assert Engine.calls == 1                   # every k from one batch of samples
    assert sampled_pass_at_k(Engine(), ["p0", "p1"], [0, 1], reward, 4, 2, params) == pytest.approx(got[2])
    assert pass_ks(16, 4) == [1, 2, 4, 8, 16] and pass_ks(8, 6) == [1, 2, 4, 6, 8] and pass_ks(1, 1) == [1]
