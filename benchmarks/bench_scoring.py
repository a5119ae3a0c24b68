"""Benchmark: the naive RM scorer vs ours, side by side, same model, same words, same prompt, one run.

* **naive**: what peer code does -- render the whole templated conversation as text for every candidate,
  tokenize it, and run the full sequence through the sequence-classification model (batched, padded; the
  model's own readout). Text is tokenized without added special tokens so both sides see identical ids.
* **ours**: :class:`rmvalues.scoring_engine.RewardScorer` -- the prompt prefix encoded once, its keys/values
  shared by every candidate (shared-prefix attention), only candidate + template-suffix tokens run per
  candidate, candidates bucketed by length.

CPU (default, ``make bench``): SmolLM2-135M-Instruct (the embedded GGUF model) loaded as
``LlamaForSequenceClassification`` with a seeded random one-logit head (speed and equality do not depend on
the head), float32, 96 Big Two nouns, one prompt. Scores must agree (max |diff| <= 1e-3); the last line is
``speedup_vs_naive: X``.

GPU (``--gpu``): an 8B Llama-shaped sequence classifier with random weights built from a config (no hub),
bfloat16, a 40-token prefix, single-token candidates (vocabulary ids), a 1-token suffix: naive vs
prefix-cache vs shared-prefix (eager) vs shared-prefix compiled; candidates per second of each.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def cpu_benchmark(n_words: int, batch_size: int, repeats: int, threads: int) -> float:
    from transformers import AutoModelForSequenceClassification

    from rmvalues import models, scores, scoring
    from rmvalues.scoring_engine import RewardScorer, conversation, split_template, word_candidates

    if threads:
        torch.set_num_threads(threads)
    name = "smollm2-135m-instruct"
    spec = models.get_spec(name)
    tok = models.load_tokenizer(spec)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(models.ensure_local(spec)), num_labels=1, dtype=torch.float32, attn_implementation="sdpa"
    )
    model.config.pad_token_id = tok.pad_token_id
    model.eval()
    labels = scoring.select_words(scores.corpus_labels("big2_nouns"), n_words)
    words = sorted(labels["word"].unique())
    prompt = scores.load_prompts().set_index("prompt_id").loc["best_ever_one", "text"]

    def naive() -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(words), batch_size):
                texts = [
                    tok.apply_chat_template(conversation(prompt, w), tokenize=False)
                    for w in words[i : i + batch_size]
                ]
                enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
                out.append(model(**enc).logits[:, 0].float().numpy())
        return np.concatenate(out)

    scorer = RewardScorer(model, tok, method="auto", batch_size=batch_size)

    def ours() -> np.ndarray:
        split = split_template(tok, prompt)
        cands = word_candidates(tok, split, words)
        return scorer.score(split, [c.ids for c in cands])

    split = split_template(tok, prompt)
    cands = word_candidates(tok, split, words)
    n_prefix, n_suffix = len(split.prefix_ids), len(split.suffix_ids)
    mean_cand = float(np.mean([len(c.ids) for c in cands]))
    # warm-up (allocator, kernels), then interleaved timing
    with torch.inference_mode():
        model(torch.tensor([split.input_ids(cands[0].ids)]))
    t_naive, t_ours = float("inf"), float("inf")
    s_naive = s_ours = None
    for _ in range(repeats):
        t, s_naive = _timed(naive, 1)
        t_naive = min(t_naive, t)
        t, s_ours = _timed(ours, 1)
        t_ours = min(t_ours, t)
    diff = float(np.max(np.abs(s_naive - s_ours)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"model: {name} as {type(model).__name__} (random seeded head), float32, {torch.get_num_threads()} thread(s)"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load:.1f}"
    )
    print(
        f"words: {len(words)} Big Two nouns; prompt 'best_ever_one'; batch size {batch_size}; best of {repeats}"
    )
    print(
        f"tokens per candidate: naive {n_prefix + mean_cand + n_suffix:.1f} (prefix {n_prefix} + word "
        f"{mean_cand:.2f} + suffix {n_suffix}), ours {mean_cand + n_suffix:.2f} (+ the prefix once)"
    )
    print(f"{'method':<28}{'seconds':>10}{'candidates/s':>15}")
    print(f"{'naive (text per candidate)':<28}{t_naive:>10.2f}{len(words) / t_naive:>15.1f}")
    print(f"{'ours (' + scorer.method + ')':<28}{t_ours:>10.2f}{len(words) / t_ours:>15.1f}")
    print(f"max |score difference|: {diff:.2e}")
    if diff > 1e-3:
        print("ERROR: scores differ", file=sys.stderr)
        raise SystemExit(1)
    return t_naive / t_ours


def gpu_benchmark(
    n_candidates: int, prefix_len: int, naive_batch: int, compile_: bool, dry_run: bool = False
) -> float:
    """8B Llama-shaped RM, random weights, bf16, on one CUDA device (``dry_run``: a tiny one on the CPU)."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from rmvalues.scoring_engine import RewardScorer, TemplateSplit

    shape = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32)
    if dry_run:  # check the code path without a GPU
        shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8)
    else:
        assert torch.cuda.is_available(), "--gpu needs a CUDA device"
    dev = torch.device("cpu" if dry_run else "cuda")
    cfg = LlamaConfig(
        vocab_size=128256, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
        pad_token_id=128004, num_labels=1, attn_implementation="sdpa", **shape,
    )  # fmt: skip
    t = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(dev):
        model = LlamaForSequenceClassification(cfg).to(torch.float32 if dry_run else torch.bfloat16).eval()
    print(
        f"built random 8B Llama-shaped RM in {time.perf_counter() - t:.0f} s "
        f"({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters)"
    )
    tok = SimpleNamespace(pad_token_id=cfg.pad_token_id)  # the scorer needs only the pad id here
    rng = np.random.default_rng(0)
    prefix = tuple(int(x) for x in rng.integers(1000, 100000, prefix_len))
    split = TemplateSplit("gpu", "", "", prefix, (128009,))
    cands = [(int(i),) for i in rng.permutation(np.arange(1000, 1000 + n_candidates))]
    rows = []

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def run(label: str, fn, n: int) -> np.ndarray:
        fn(cands[: min(n, 256)])  # warm-up / compile
        sync()
        t0 = time.perf_counter()
        out = fn(cands[:n])
        sync()
        dt = time.perf_counter() - t0
        rows.append((label, n, dt, n / dt))
        return out

    def naive(c):
        out = []
        with torch.inference_mode():
            for i in range(0, len(c), naive_batch):
                ids = torch.tensor([split.input_ids(x) for x in c[i : i + naive_batch]], device=dev)
                out.append(model(input_ids=ids).logits[:, 0].float().cpu().numpy())
        return np.concatenate(out)

    n_naive = min(n_candidates, 8192)
    ref = run("naive (whole sequence)", naive, n_naive)
    pc = RewardScorer(model, tok, method="prefix-cache", batch_size=1024)
    run("prefix-cache (copies prefix)", lambda c: pc.score(split, c), n_candidates)
    sp = RewardScorer(model, tok, method="shared-prefix", batch_size="auto")
    fast = run("shared-prefix (eager)", lambda c: sp.score(split, c), n_candidates)
    if compile_:
        spc = RewardScorer(model, tok, method="shared-prefix", batch_size=sp.batch_size, compile=True)
        run("shared-prefix (compiled)", lambda c: spc.score(split, c), n_candidates)
    from rmvalues.scoring_engine import rank_correlation

    rho = rank_correlation(ref, fast[:n_naive])
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu (dry run, tiny model)"
    print(f"device: {name}; prefix {prefix_len} tokens, 1-token candidates, suffix 1 token")
    print(f"{'method':<32}{'candidates':>12}{'seconds':>10}{'candidates/s':>15}")
    for label, n, dt, rate in rows:
        print(f"{label:<32}{n:>12}{dt:>10.2f}{rate:>15.0f}")
    print(f"bf16 rank correlation naive vs shared-prefix: {rho:.4f}")
    best = max(r[3] for r in rows[1:])
    return best / rows[0][3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="8B Llama-shaped random RM on CUDA (bf16)")
    ap.add_argument("--words", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for both sides (1: robust on a shared machine; 0: torch default)",
    )
    ap.add_argument("--candidates", type=int, default=65536, help="--gpu: number of single-token candidates")
    ap.add_argument("--prefix", type=int, default=40, help="--gpu: prefix length")
    ap.add_argument("--no-compile", action="store_true", help="--gpu: skip the compiled variant")
    ap.add_argument("--dry-run", action="store_true", help="--gpu: a tiny model on the CPU (checks the code)")
    args = ap.parse_args()
    if args.gpu:
        speedup = gpu_benchmark(args.candidates, args.prefix, 256, not args.no_compile, args.dry_run)
    else:
        speedup = cpu_benchmark(args.words, args.batch_size, args.repeats, args.threads)
    print(f"speedup_vs_naive: {speedup:.1f}")


if __name__ == "__main__":
    main()
