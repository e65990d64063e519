"""The policy: a real transformers causal LM and tokenizer, built from scratch or loaded.

The embedded default is a tiny Qwen2 (~1M parameters) over a character vocabulary built with
`tokenizers`; both are saved with ``save_pretrained`` so that ``AutoModelForCausalLM`` and
``AutoTokenizer`` (and vLLM) load them from the directory like any hub model.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from critique_rl.config import ModelConfig, WarmStartConfig

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


def build_tiny_model(cfg: WarmStartConfig, tokenizer: PreTrainedTokenizerFast, seed: int) -> Qwen2ForCausalLM:
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


def load_policy(path: str | Path, cfg: ModelConfig):
    """Load (model, tokenizer) from a directory or hub id, with a clear error when absent."""
    path = str(path)
    if not path:
        raise ValueError("model.name_or_path is empty: run `critique-rl warmstart` first or point it at a model")
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists()
    if looks_local and not (Path(path).expanduser() / "config.json").is_file():
        raise FileNotFoundError(f"model.name_or_path {path!r}: no config.json there; expected a directory written by save_pretrained")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    extra = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, cfg.torch_dtype), trust_remote_code=cfg.trust_remote_code, **extra)
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
