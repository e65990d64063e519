"""Checkpoints that survive a crash mid-write and damage afterwards.

Layout: ``RUN/checkpoints/step-000050/`` holds the model and tokenizer (HF format),
``trainer_state.pt`` (optimizer, step, every RNG) and ``manifest.json``: each file's size and
sha256, written last. A checkpoint is written to a temporary folder and renamed, so only finished
folders have the final name; the manifest then tells a complete one from one damaged since
(truncated by a crash of the file system, a bad copy, a full disk during a sync).

Sizes are checked whenever checkpoints are listed (a stat per file); hashes only once, of the
checkpoint a resume loads. Hashing runs at roughly 1-2 GB/s per core, files in parallel: nothing
for the tiny model, about half a minute per save and per resume for a 7B full fine-tune (15 GB of
weight shards, ~56 GB of Adam state in one file).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

PREFIX = "step-"
MANIFEST = "manifest.json"


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint folder of the run, oldest first, complete or not (temporary folders excluded)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit() and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_all(paths: list[Path]) -> list[str]:
    # hashlib releases the GIL on large buffers: the weight shards and the optimizer state hash in parallel.
    with ThreadPoolExecutor(max_workers=min(8, len(paths) or 1)) as pool:
        return list(pool.map(_sha256, paths))


def write_manifest(folder: Path) -> None:
    """Record the size and sha256 of every file in ``folder`` in its manifest.json."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": h}
               for p, h in zip(files, _hash_all(files))}
    (folder / MANIFEST).write_text(json.dumps({"files": entries}, indent=1))


def problem(checkpoint: Path, hashes: bool = False) -> str | None:
    """What is wrong with ``checkpoint`` in a few words, or None when it is complete.

    Complete: every file of its manifest is there with the recorded size and, with ``hashes``, the
    recorded sha256. A checkpoint from before manifests counts as complete when it holds
    ``trainer_state.pt`` (the rename guaranteed it was whole when written).
    """
    if not (checkpoint / MANIFEST).is_file():
        return None if (checkpoint / "trainer_state.pt").is_file() else f"it has neither {MANIFEST} nor trainer_state.pt"
    try:
        entries = {name: (int(e["bytes"]), str(e["sha256"]))
                   for name, e in json.loads((checkpoint / MANIFEST).read_text())["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{MANIFEST} is unreadable ({type(err).__name__}: {err})"
    for name, (size, _) in entries.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if (actual := path.stat().st_size) != size:
            return f"{name} is {actual:,} bytes, {MANIFEST} says {size:,}"
    if hashes:
        names = list(entries)
        for name, digest in zip(names, _hash_all([checkpoint / n for n in names])):
            if digest != entries[name][1]:
                return f"{name} does not match its sha256 in {MANIFEST}"
    return None


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose files have their recorded sizes (no hashing: cheap enough to call often)."""
    return next((p for p in reversed(checkpoints(run_dir)) if problem(p) is None), None)


class CheckpointError(OSError):
    """A checkpoint could not be written (e.g. the disk is full), or none of a run's checkpoints is usable."""


def what_is_intact(run_dir: Path) -> str:
    """The end of a write error's message: what a resume starts from."""
    previous = latest_checkpoint(run_dir)
    return f"the previous checkpoint {previous} is intact" if previous else "there is no earlier checkpoint"


def resume_point(run_dir: Path) -> tuple[Path | None, str | None]:
    """The checkpoint to resume from, its files' hashes verified, and a warning line naming the newer
    broken ones passed over (None when there were none). No checkpoint at all: (None, None).

    Raises CheckpointError when every checkpoint is broken: starting over would silently discard
    the run, so the user decides.
    """
    broken = []
    for path in reversed(checkpoints(run_dir)):
        issue = problem(path, hashes=True)
        if issue is None:
            if not broken:
                return path, None
            return path, (f"warning: skipping broken checkpoint{'s' if len(broken) > 1 else ''} {', '.join(broken)}; "
                          f"resuming from {path.name} instead")
        broken.append(f"{path.name} ({issue})")
    if broken:
        root = run_dir / "checkpoints"
        raise CheckpointError(f"no usable checkpoint in {root}: {', '.join(broken)}; to train the run again from "
                              f"step 0, move {root} out of {run_dir} and run: critique-rl train --resume {run_dir}")
    return None, None


def save_checkpoint(run_dir: Path, step: int, model, tokenizer, state: dict, keep_last: int) -> Path:
    root = run_dir / "checkpoints"
    final = root / f"{PREFIX}{step:06d}"
    tmp = root / f".tmp-{PREFIX}{step:06d}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(state, tmp / "trainer_state.pt")
        write_manifest(tmp)
    except (OSError, RuntimeError) as err:     # torch.save reports a full disk as RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write the checkpoint of step {step} under {root}: {err}; "
                              f"{what_is_intact(run_dir)}") from None
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    # Broken checkpoints do not count towards keep_last: pruning never leaves only broken ones.
    found = checkpoints(run_dir)
    complete = [p for p in found if problem(p) is None]
    if len(complete) > keep_last:
        for old in found[:found.index(complete[-keep_last])]:
            shutil.rmtree(old, ignore_errors=True)
    return final
