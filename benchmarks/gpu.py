"""Accelerator benchmarks (``make bench-gpu``): the engine at the paper's model sizes, naive side by side.

Four measurements on one CUDA device, random weights built from configs (no hub), bfloat16, each writing its
figures into one JSON file (``benchmarks/results/gpu-<date>.json``) as soon as it finishes:

1. ``scoring_llama8b``: an 8B Llama-3-shaped sequence classifier (sdpa); naive (the whole templated sequence
   per candidate) vs the shared-prefix scorer (prefix encoded once): candidates per second, and the rank
   correlation of the two score vectors.
2. ``scoring_gemma2_27b``: a Gemma-2-27B-shaped classifier (eager attention: logit soft-capping, sliding
   window); the same comparison.
3. ``next_token_logprobs``: full-vocabulary next-token log-probabilities of 54 prompts with an 8B Llama-shaped
   causal LM: naive (logits at every position, then the last) vs ours (length-sorted batches, the LM head at
   the last position only).
4. ``lora_step``: one optimizer step of the paper's LoRA recipe (r 32, alpha 64, q/k/v/o; effective batch 16
   pairs as 4 x 4 micro-batches; Bradley-Terry loss) on a Llama-3.2-3B-shaped classifier: seconds per step.

A section that would not fit in what is left of ``--budget-s`` (estimated from the sections before it) is
skipped and says so. ``--dry-run`` runs every section with tiny shapes on the CPU (the test suite does: the
code paths are checked without a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
LLAMA8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0)  # fmt: skip
LLAMA3B = dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
               num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0)  # fmt: skip
GEMMA27B = dict(hidden_size=4608, intermediate_size=36864, num_hidden_layers=46, num_attention_heads=32,
                num_key_value_heads=16, head_dim=128, vocab_size=256000, sliding_window=4096,
                attn_logit_softcapping=50.0, final_logit_softcapping=30.0, query_pre_attn_scalar=144)  # fmt: skip
TINY = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=4
)


class Bench:
    """Device, dtype, timing and the JSON record of one benchmark run."""

    def __init__(self, dry_run: bool, budget_s: float, out: Path) -> None:
        self.dry = dry_run
        self.dev = torch.device("cpu" if dry_run else "cuda")
        self.dtype = torch.float32 if dry_run else torch.bfloat16
        self.budget_s, self.start, self.out = budget_s, time.perf_counter(), out
        name = "cpu (dry run: tiny shapes)" if dry_run else torch.cuda.get_device_name(0)
        self.record: dict[str, Any] = {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "device": name,
            "dry_run": dry_run,
            "torch": torch.__version__,
            "platform": platform.platform(),
            "budget_s": budget_s,
            "sections": {},
        }

    def shape(self, full: dict[str, Any], **tiny: Any) -> dict[str, Any]:
        return {**(TINY | tiny)} if self.dry else dict(full)

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(self, fn: Any) -> tuple[float, Any]:
        self.sync()
        t = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - t, out

    def save(self, name: str, figures: dict[str, Any]) -> None:
        self.record["sections"][name] = figures
        self.record["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".part")
        tmp.write_text(json.dumps(self.record, indent=2, default=float))
        os.replace(tmp, self.out)
        print(json.dumps({name: figures}, default=float), flush=True)

    def free(self) -> None:
        import gc

        gc.collect()
        if self.dev.type == "cuda":
            torch.cuda.empty_cache()


def _build(bench: Bench, cls: Any, config: Any) -> tuple[Any, float]:
    """A model with random weights, built directly on the device in the benchmark's dtype (a 27B model built
    in float32 first would need twice its bfloat16 memory)."""
    t = time.perf_counter()
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(bench.dtype)
    try:
        with torch.device(bench.dev):
            model = cls(config).eval()
    finally:
        torch.set_default_dtype(default)
    return model, time.perf_counter() - t


def scoring(bench: Bench, family: str, n_candidates: int, prefix_len: int = 40) -> dict[str, Any]:
    """Naive vs shared-prefix scoring of single-token candidates after a ``prefix_len``-token prompt."""
    from transformers import (
        Gemma2Config,
        Gemma2ForSequenceClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
    )

    from rmvalues.engine import RewardScorer, TemplateSplit, rank_correlation

    if family == "llama":
        cfg = LlamaConfig(**bench.shape(LLAMA8B, vocab_size=1024), pad_token_id=0, num_labels=1,
                          max_position_embeddings=8192, attn_implementation="sdpa")  # fmt: skip
        model, build_s = _build(bench, LlamaForSequenceClassification, cfg)
    else:
        tiny = dict(vocab_size=1024, head_dim=8, sliding_window=16, attn_logit_softcapping=50.0,
                    final_logit_softcapping=30.0, query_pre_attn_scalar=8)  # fmt: skip
        cfg = Gemma2Config(**bench.shape(GEMMA27B, **tiny), pad_token_id=0, num_labels=1,
                           max_position_embeddings=8192, attn_implementation="eager")  # fmt: skip
        model, build_s = _build(bench, Gemma2ForSequenceClassification, cfg)
    vocab = cfg.vocab_size
    rng = np.random.default_rng(0)
    split = TemplateSplit("bench", "", "", tuple(int(x) for x in rng.integers(10, vocab, prefix_len)), (1,))
    cands = [(int(i),) for i in rng.permutation(np.arange(10, 10 + min(n_candidates, vocab - 10)))]
    n_naive = min(len(cands), 2048 if not bench.dry else len(cands))

    def naive(c: list[tuple[int, ...]], batch: int = 64) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(c), batch):
                ids = torch.tensor([split.input_ids(x) for x in c[i : i + batch]], device=bench.dev)
                out.append(model(input_ids=ids).logits[:, 0].float().cpu().numpy())
        return np.concatenate(out)

    scorer = RewardScorer(model, SimpleNamespace(pad_token_id=0), method="shared-prefix", batch_size=0)
    naive(cands[:64])
    scorer.score(split, cands[:256])  # warm-up
    t_naive, ref = bench.timed(lambda: naive(cands[:n_naive]))
    t_ours, fast = bench.timed(lambda: scorer.score(split, cands))
    figures = {
        "shape": {
            k: v for k, v in cfg.to_dict().items() if k in ("hidden_size", "num_hidden_layers", "vocab_size")
        },
        "parameters_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 2),
        "dtype": str(bench.dtype).replace("torch.", ""),
        "build_s": round(build_s, 1),
        "prefix_tokens": prefix_len,
        "naive_candidates": n_naive,
        "naive_candidates_per_s": round(n_naive / t_naive, 1),
        "ours_candidates": len(cands),
        "ours_candidates_per_s": round(len(cands) / t_ours, 1),
        "ours_batch_size": scorer.batch_size,
        "speedup_vs_naive": round((len(cands) / t_ours) / (n_naive / t_naive), 2),
        "rank_correlation_naive_vs_ours": round(float(rank_correlation(ref, fast[:n_naive])), 4),
    }
    return figures


def next_token_logprobs(bench: Bench, n_prompts: int = 54) -> dict[str, Any]:
    """Full-vocabulary next-token log-probs of ``n_prompts`` prompts of 20-60 tokens (random ids)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rmvalues.engine import pad_rows

    cfg = LlamaConfig(**bench.shape(LLAMA8B, vocab_size=1024), pad_token_id=0, max_position_embeddings=8192)
    model, build_s = _build(bench, LlamaForCausalLM, cfg)
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(10, cfg.vocab_size, int(n))) for n in rng.integers(20, 60, n_prompts)]

    def naive() -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for p in prompts:  # one prompt at a time, logits at every position
                logits = model(input_ids=torch.tensor([p], device=bench.dev)).logits[0, -1].float()
                out.append(torch.log_softmax(logits, -1).cpu())
        return torch.stack(out)

    def ours(batch: int = 16) -> torch.Tensor:
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out = torch.empty((len(prompts), cfg.vocab_size))
        with torch.inference_mode():
            for s in range(0, len(order), batch):
                idx = order[s : s + batch]
                ids, mask = pad_rows([prompts[i] for i in idx], 0, "right", bench.dev)
                last = mask.sum(1) - 1
                keep = torch.unique(last)
                logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
                picked = logits[torch.arange(len(idx), device=bench.dev), torch.searchsorted(keep, last)]
                out[torch.tensor(idx)] = torch.log_softmax(picked.float(), -1).cpu()
        return out

    naive(), ours()  # warm-up
    t_naive, a = bench.timed(naive)
    t_ours, b = bench.timed(ours)
    figures = {
        "prompts": n_prompts,
        "vocab": cfg.vocab_size,
        "build_s": round(build_s, 1),
        "naive_s": round(t_naive, 3),
        "ours_s": round(t_ours, 3),
        "speedup_vs_naive": round(t_naive / t_ours, 2),
        "max_abs_logprob_difference": round(float((a - b).abs().max()), 4),
    }
    return figures


def lora_step(bench: Bench, seq_len: int = 512, micro: int = 4, accumulation: int = 4) -> dict[str, Any]:
    """Seconds per optimizer step of LoRA reward-model training (pairs of ``seq_len`` tokens)."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import LlamaConfig, LlamaForSequenceClassification

    cfg = LlamaConfig(**bench.shape(LLAMA3B, vocab_size=1024), pad_token_id=0, num_labels=1,
                      max_position_embeddings=8192, attn_implementation="sdpa")  # fmt: skip
    base, build_s = _build(bench, LlamaForSequenceClassification, cfg)
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=32, lora_alpha=64, lora_dropout=0.05,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], modules_to_save=["score"])  # fmt: skip
    model = get_peft_model(base, lora).train()
    if not bench.dry:
        model.gradient_checkpointing_enable()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    rng = np.random.default_rng(0)
    seq = seq_len if not bench.dry else 32

    def step() -> float:
        opt.zero_grad()
        total = 0.0
        for _ in range(accumulation):
            ids = torch.tensor(rng.integers(10, cfg.vocab_size, (2 * micro, seq)), device=bench.dev)
            r = model(input_ids=ids).logits[:, 0].float()
            loss = -torch.nn.functional.logsigmoid(r[:micro] - r[micro:]).mean() / accumulation
            loss.backward()
            total += float(loss.detach())
        opt.step()
        return total

    step()  # warm-up
    t, _ = bench.timed(step)
    figures = {
        "parameters_b": round(sum(p.numel() for p in base.parameters()) / 1e9, 2),
        "trainable_m": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 1),
        "pairs_per_step": micro * accumulation,
        "tokens_per_sequence": seq,
        "build_s": round(build_s, 1),
        "seconds_per_step": round(t, 3),
        "gradient_checkpointing": not bench.dry,
    }
    return figures


SECTIONS = (
    ("scoring_llama8b", lambda b: scoring(b, "llama", 32768 if not b.dry else 256), 90),
    ("scoring_gemma2_27b", lambda b: scoring(b, "gemma", 16384 if not b.dry else 256), 180),
    ("next_token_logprobs", next_token_logprobs, 60),
    ("lora_step", lora_step, 90),
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--budget-s", type=float, default=480.0, help="stop starting sections after this many seconds"
    )
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (checks the code paths)")
    ap.add_argument(
        "--out", type=Path, default=None, help="JSON file (default benchmarks/results/gpu-<date>.json)"
    )
    args = ap.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("bench-gpu needs a CUDA device (use --dry-run to check the code on the CPU)", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "benchmarks" / "results" / f"gpu-{'dry-' if args.dry_run else ''}{stamp}.json"
    bench = Bench(args.dry_run, args.budget_s, out)
    for name, fn, estimate_s in SECTIONS:
        if not args.dry_run and bench.left() < estimate_s:
            bench.save(
                name, {"skipped": f"{bench.left():.0f} s of the budget left, about {estimate_s} s needed"}
            )
            continue
        t = time.perf_counter()
        figures = fn(bench)
        bench.free()  # the section's model is gone with its frame
        figures["section_s"] = round(time.perf_counter() - t, 1)
        bench.save(name, figures)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
