#!/usr/bin/env bash
# GPU smoke test: a few Critique-GRPO steps of a ~0.36B random Qwen2 on one GPU, with the hf
# engine and, when vllm is installed, the colocated vllm engine; prints seconds per step,
# sampling tokens/s and the GPU memory peak of each.
#
#   scripts/gpu_smoke.sh                       # STEPS=4 OUT=runs/gpu_smoke PY=.venv/bin/python
#   STEPS=8 ENGINES="hf vllm" scripts/gpu_smoke.sh
#
# The model is built locally from a Qwen2-0.5B-shaped config (hidden 896, 24 layers, 14 heads,
# 2 KV heads, MLP 4864) with the character tokenizer and random weights: no download. Rewards
# are 0, so every group fails and the critique + refine phase runs each step (the costly path).
# Exits 2 with a message when no CUDA GPU is usable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
STEPS="${STEPS:-4}"
OUT="${OUT:-runs/gpu_smoke}"
ENGINES="${ENGINES:-hf vllm}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_smoke: no NVIDIA GPU here (nvidia-smi missing or failing); this smoke test needs one CUDA GPU" >&2
  exit 2
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_smoke: $PY has no CUDA torch (torch.cuda.is_available() is False); install a CUDA build of torch into .venv" >&2
  exit 2
fi
mkdir -p "$OUT"
MODEL="$OUT/qwen2-0.36b-random"

if [ ! -f "$MODEL/config.json" ]; then
  "$PY" - "$MODEL" <<'EOF'
import sys

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from critique_rl.modeling import build_char_tokenizer

tok = build_char_tokenizer()
torch.manual_seed(0)
config = Qwen2Config(vocab_size=len(tok), hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                     num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=2048,
                     tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                     bos_token_id=tok.bos_token_id, torch_dtype="bfloat16")
model = Qwen2ForCausalLM(config).to(torch.bfloat16)
model.save_pretrained(sys.argv[1])
tok.save_pretrained(sys.argv[1])
print(f"gpu_smoke: built {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B-parameter random Qwen2 in {sys.argv[1]}")
EOF
fi

COMMON=(model.name_or_path="$MODEL" model.device=cuda model.torch_dtype=bfloat16 method=critique_grpo
        train.steps="$STEPS" train.prompts_per_step=16 train.save_every=1000 rollout.num_generations=8
        rollout.max_completion_length=128 eval.every=0 eval.probe_prompts=0 task.eval_easy=16 task.eval_hard=16
        eval.pass_n=2 eval.pass_k=1)

run_engine() {   # engine, extra overrides...
  local engine="$1"; shift
  local run="$OUT/$engine" mem="$OUT/$engine.mem"
  rm -rf "$run"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$mem" &
  local monitor=$!
  local start=$SECONDS
  if ! "$PY" -m critique_rl.cli train --config tiny --out "$run" "${COMMON[@]}" rollout.engine="$engine" "$@"; then
    kill "$monitor" 2>/dev/null || true
    echo "gpu_smoke: the $engine run failed (see above)" >&2
    return 1
  fi
  kill "$monitor" 2>/dev/null || true
  wait "$monitor" 2>/dev/null || true
  echo "gpu_smoke: $engine run took $((SECONDS - start)) s in all (model load, evaluations included)"
}

ran=()
for engine in $ENGINES; do
  case "$engine" in
    hf) run_engine hf && ran+=(hf) ;;
    vllm)
      if "$PY" -c "import vllm" 2>/dev/null; then
        run_engine vllm rollout.vllm_gpu_memory_utilization=0.35 rollout.vllm_dtype=bfloat16 \
          rollout.vllm_max_model_len=512 && ran+=(vllm)
      else
        echo "gpu_smoke: vllm is not installed in $PY: skipped (pip install 'critique-rl[vllm]')"
      fi ;;
    *) echo "gpu_smoke: unknown engine $engine (hf, vllm)" >&2; exit 2 ;;
  esac
done
[ "${#ran[@]}" -gt 0 ] || { echo "gpu_smoke: no engine ran" >&2; exit 1; }

"$PY" - "$OUT" "${ran[@]}" <<'EOF'
import json
import statistics
import sys
from pathlib import Path

import yaml

out, engines = Path(sys.argv[1]), sys.argv[2:]
print(f"\n{'engine':8} {'s/step':>8} {'sample s':>9} {'refine s':>9} {'train s':>8} {'sample tok/s':>13} {'GPU MiB peak':>13}")
for engine in engines:
    rows = [r for r in map(json.loads, (out / engine / "metrics.jsonl").read_text().splitlines()) if r.get("step", 0) > 0]
    steady = rows[1:] or rows                   # the first step warms up (allocator, CUDA graphs)
    med = lambda key: statistics.median(r.get(key, 0.0) for r in steady)
    cfg = yaml.safe_load((out / engine / "config.yaml").read_text())
    per_step = cfg["train"]["prompts_per_step"] * cfg["rollout"]["num_generations"]
    tokens = statistics.median(r["completions/mean_length"] * per_step / r["time/sample"] for r in steady)
    mem = [int(x) for x in (out / f"{engine}.mem").read_text().split() if x.strip().isdigit()]
    print(f"{engine:8} {med('time/step'):8.2f} {med('time/sample'):9.2f} {med('time/refine'):9.2f} "
          f"{med('time/train'):8.2f} {tokens:13.0f} {max(mem, default=0):13d}")
print(f"(medians over steps 2..{len(rows)}; tok/s = initial samples' tokens / time/sample; GPU MiB from nvidia-smi, "
      f"every process on the GPU, vLLM's reserved share included)")
EOF
