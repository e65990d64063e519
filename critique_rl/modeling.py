"""The policy: a real transformers causal LM and tokenizer, built from scratch or loaded.

The embedded default is a tiny Qwen2 (~1M parameters) over a character vocabulary built with
`tokenizers`; both are saved with ``save_pretrained`` so that ``AutoModelForCausalLM`` and
``AutoTokenizer`` (and vLLM) load them from the directory like any hub model.
"""

from __future__ import annotations

import difflib
import os
import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from critique_rl.config import CriticModelConfig, ModelConfig, WarmStartConfig

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}
CHARACTERS = string.digits + string.ascii_letters + string.punctuation + " \n"


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable ASCII character; specials first so pad is id 0.

    It is a byte-level BPE without merges, the same pipeline as Qwen2's tokenizer: loading the
    directory with ``AutoTokenizer`` (which picks the Qwen2 tokenizer class for a Qwen2 model)
    then gives exactly the same ids.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    for ch in CHARACTERS:
        vocab[_byte_level(ch)] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, padding_side="left", **SPECIAL_TOKENS)
    return tok


def _byte_level(ch: str) -> str:
    """GPT-2's byte-to-unicode map for one ASCII character (space -> 'Ġ', newline -> 'Ċ')."""
    code = ord(ch)
    if 33 <= code <= 126:
        return ch
    shifted = [b for b in range(256) if not (33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255)]
    return chr(256 + shifted.index(code))


def build_tiny_model(cfg: WarmStartConfig | CriticModelConfig, tokenizer: PreTrainedTokenizerFast, seed: int) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return Qwen2ForCausalLM(config)


def resolve_device(name: str) -> torch.device:
    """'auto': this process's GPU (LOCAL_RANK under accelerate/torchrun) when there is one, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(name)


class ModelLoadError(ValueError):
    """A model directory or hub id that does not load; the message is one line naming the setting."""


def _whereabouts(name: str) -> str:
    """Where the missing path ``name`` resolved to, and the nearest folder that exists (typos show there)."""
    path = Path(name).expanduser().absolute()
    nearest = next(p for p in path.parents if p.is_dir())
    missing = path.relative_to(nearest).parts[0]
    close = difflib.get_close_matches(missing, [c.name for c in nearest.iterdir() if c.is_dir()], n=3, cutoff=0.6)
    where = "" if str(path) == name else f" {path}"
    similar = f"; similar there: {', '.join(close)}" if close else ""
    return f"no such directory{where} (nearest existing folder: {nearest}{similar})"


def check_model_source(name: str, what: str = "model.name_or_path") -> dict:
    """``from_pretrained`` options for ``name``, after failing at once when it cannot load.

    An existing directory needs its config.json; a missing path-like name is an error without any
    hub request. A hub id is loaded from the hub when a probe reaches it, else from the local cache
    only: an unreachable hub otherwise costs ~45 s of retries before the same failure.
    """
    from critique_rl.datasets_io import hub_unreachable, looks_like_hub_id

    if not name:
        raise ModelLoadError(f"{what} is empty: run `critique-rl warmstart` first or point it at a model")
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelLoadError(f"{what} {name!r}: no config.json there; expected a directory written by save_pretrained")
        return {}
    if not looks_like_hub_id(name):
        raise ModelLoadError(f"{what} {name!r}: {_whereabouts(name)}")
    return {"local_files_only": True} if hub_unreachable() else {}


def _load_error(name: str, what: str, options: dict, err: Exception) -> ModelLoadError:
    """A failed ``from_pretrained`` in one line: of a local directory, from the cache only, or from the hub."""
    from critique_rl.datasets_io import hub_unreachable, one_line

    if Path(name).expanduser().exists():
        return ModelLoadError(f"{what} {name!r} cannot be loaded: {one_line(str(err))}")
    if options.get("local_files_only"):
        return ModelLoadError(f"{what} {name!r}: {_whereabouts(name)}, not in the local hub cache, and the hub is "
                              f"unreachable ({hub_unreachable()})")
    return ModelLoadError(f"{what} {name!r}: {_whereabouts(name)}, and loading it from the hub failed: {one_line(str(err))}")


def load_tokenizer(path: str | Path, cfg: ModelConfig, what: str = "model.name_or_path"):
    """The tokenizer of a directory or hub id, its model config checked too (no weights: a dry run).

    Every failure is a ModelLoadError of one line naming ``what`` (the setting or option given)."""
    name = str(path)
    options = check_model_source(name, what)
    try:
        AutoConfig.from_pretrained(name, trust_remote_code=cfg.trust_remote_code, **options)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=cfg.trust_remote_code, **options)
    except (OSError, ValueError) as err:
        raise _load_error(name, what, options, err) from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(path: str | Path, cfg: ModelConfig, what: str = "model.name_or_path"):
    """Load (model, tokenizer) from a directory or hub id; failures as in ``load_tokenizer``."""
    name = str(path)
    tokenizer = load_tokenizer(name, cfg, what)
    options = check_model_source(name, what)      # as for the tokenizer: the hub probe is cached
    extra = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=getattr(torch, cfg.torch_dtype), trust_remote_code=cfg.trust_remote_code, **options, **extra)
    except (OSError, ValueError) as err:
        raise _load_error(name, what, options, err) from None
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora_r > 0:
        model = with_lora(model, cfg)
    return model.to(resolve_device(cfg.device)), tokenizer


def with_lora(model, cfg: ModelConfig):
    """``model`` with trainable LoRA adapters (peft); the base weights are frozen."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("model.lora_r > 0 needs peft: pip install 'critique-rl[lora]'") from None
    targets = cfg.lora_target_modules if cfg.lora_target_modules == "all-linear" else \
        [m.strip() for m in cfg.lora_target_modules.split(",") if m.strip()]
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def load_trained_weights(model, checkpoint: str | Path, cfg: ModelConfig) -> None:
    """Copy a checkpoint's trained weights into ``model``: the LoRA adapters, or the whole model."""
    checkpoint = Path(checkpoint)
    if (checkpoint / "adapter_config.json").is_file():
        from peft import load_peft_weights, set_peft_model_state_dict

        set_peft_model_state_dict(model, load_peft_weights(str(checkpoint), device=str(model.device)))
        return
    saved, _ = load_policy(checkpoint, cfg)
    model.load_state_dict(saved.state_dict())
