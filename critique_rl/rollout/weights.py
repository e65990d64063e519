"""The policy's current weights, in the form an inference engine loads: plain transformers names.

A LoRA policy (peft) is exported merged: the adapters are folded into the base weights for the
export and unfolded afterwards, and the names lose peft's wrapping (``base_model.model.``,
``.base_layer``, ``modules_to_save.default.``), as TRL does before loading weights into vLLM.
Directories are written atomically (a temporary name, then a rename) and old ones pruned.

    >>> clean_name("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight")
    'model.layers.0.self_attn.q_proj.weight'
    >>> clean_name("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight") is None
    True
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

import torch


def is_peft(model) -> bool:
    return hasattr(model, "get_base_model") and hasattr(model, "peft_config")


def clean_name(name: str) -> str | None:
    """A peft parameter name as the plain model names it; None for adapter-only tensors."""
    if "lora_" in name or "original_module" in name:
        return None
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer", "").replace("modules_to_save.default.", "")


def policy_path(model) -> str:
    """Where the policy was loaded from (its ``name_or_path``), '' when unknown."""
    base = model.get_base_model() if is_peft(model) else model
    return str(getattr(base, "name_or_path", "") or getattr(getattr(base, "config", None), "_name_or_path", "") or "")


@contextlib.contextmanager
def merged_state_dict(model) -> Iterator[dict[str, torch.Tensor]]:
    """The policy's weights as plain transformers names, LoRA adapters merged, for the ``with`` body."""
    if not is_peft(model):
        yield model.state_dict()
        return
    model.merge_adapter()
    try:
        state = {}
        for name, tensor in model.state_dict().items():
            plain = clean_name(name)
            if plain is not None:
                state[plain] = tensor
        yield state
    finally:
        model.unmerge_adapter()


def save_policy(model, tokenizer, root: Path, name: str, keep: int) -> Path:
    """Write the policy (merged) and its tokenizer to ``root/name`` atomically; keep the ``keep`` newest."""
    root.mkdir(parents=True, exist_ok=True)
    final, tmp = root / name, root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with torch.no_grad(), merged_state_dict(model) as state:
            base = model.get_base_model() if is_peft(model) else model
            base.save_pretrained(tmp, state_dict=state if is_peft(model) else None)
        tokenizer.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    prune(root, keep, final)
    return final


def prune(root: Path, keep: int, newest: Path) -> None:
    """Delete all but the ``keep`` most recently written directories of ``root`` (never ``newest``)."""
    dirs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".tmp-") and p != newest),
                  key=lambda p: p.stat().st_mtime_ns)
    for old in dirs[:max(0, len(dirs) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
