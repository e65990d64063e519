"""From token-id lists to padded tensors, and from a batch to token-budgeted micro-batches."""

from __future__ import annotations

from typing import Sequence

import torch


def pad_sequences(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], pad_id: int):
    """Right-padded prompt+completion tensors.

    Returns ``input_ids``, ``attention_mask`` and ``completion_mask``, each (B, T); the
    completion mask is 1 on completion tokens, the ones the loss trains.
    """
    lengths = [len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)]
    width = max(lengths)
    input_ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(lengths), width), dtype=torch.long)
    completion_mask = torch.zeros((len(lengths), width), dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        input_ids[i, :len(p) + len(c)] = torch.tensor(list(p) + list(c), dtype=torch.long)
        attention_mask[i, :len(p) + len(c)] = 1
        completion_mask[i, len(p):len(p) + len(c)] = 1.0
    return input_ids, attention_mask, completion_mask


def token_budget_microbatches(lengths: Sequence[int], max_tokens: int, max_rows: int = 0) -> list[list[int]]:
    """Group sequence indices into micro-batches whose padded size (count x longest) fits the budget.

    Sorting by length keeps padding waste low (the sort is stable: equal lengths keep their order);
    a sequence longer than the budget gets a micro-batch of its own. ``max_rows`` (0: none) also
    caps the count.

    >>> token_budget_microbatches([5, 1, 4, 2], max_tokens=8)
    [[1, 3], [2], [0]]
    >>> token_budget_microbatches([3, 3, 3, 3], max_tokens=100, max_rows=3)
    [[0, 1, 2], [3]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and ((len(current) + 1) * lengths[i] > max_tokens or len(current) == max_rows):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def sequence_logits(model, input_ids, attention_mask):
    """Logits aligned with the tokens they predict: (B, T-1, V) for tokens input_ids[:, 1:]."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    return logits[:, :-1].float()
