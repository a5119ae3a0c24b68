"""Benchmark: the naive RM scorer vs ours, side by side, same model, same words, same prompt, one run.

* **naive**: what peer code does -- render the whole templated conversation as text for every candidate,
  tokenize it, and run the full sequence through the sequence-classification model (batched, padded; the
  model's own readout). Text is tokenized without added special tokens so both sides see identical ids.
* **ours**: :class:`rmvalues.engine.RewardScorer` -- the prompt prefix encoded once, its keys/values
  shared by every candidate (shared-prefix attention), only candidate + template-suffix tokens run per
  candidate, candidates bucketed by length.

CPU (default, ``make bench``): SmolLM2-135M-Instruct (the embedded GGUF model) loaded as
``LlamaForSequenceClassification`` with a seeded random one-logit head (speed and equality do not depend on
the head), float32, 96 Big Two nouns, one prompt. Scores must agree (max |diff| <= 1e-3); the last line is
``speedup_vs_naive: X``.

The accelerator benchmarks (8B and 27B scorers, next-token log-probs, a LoRA step) are ``benchmarks/gpu.py``
(``make bench-gpu``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

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

    from rmvalues import models
    from rmvalues.data.corpora import load_corpus, scorable
    from rmvalues.data.prompts import load_prompts
    from rmvalues.engine import RewardScorer, conversation, split_template, word_candidates
    from rmvalues.stages.scoring.grid import select_words

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
    labels = select_words(
        scorable(load_corpus("big2_nouns"))[["corpus", "word", "category", "subcategory"]], n_words
    )
    words = sorted(labels["word"].unique())
    prompt = load_prompts().set_index("prompt_id").loc["best_ever_one", "text"]

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for both sides (1: robust on a shared machine; 0: torch default)",
    )
    args = ap.parse_args()
    speedup = cpu_benchmark(args.words, args.batch_size, args.repeats, args.threads)
    print(f"speedup_vs_naive: {speedup:.1f}")


if __name__ == "__main__":
    main()
