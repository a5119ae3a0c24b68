"""The accelerator benchmark (``make bench-gpu``) runs end to end with tiny shapes on the CPU: every section
writes its figures, and ours agrees with the naive computation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["dry_run"] is True and record["device"].startswith("cpu")
    sections = record["sections"]
    assert list(sections) == ["scoring_llama8b", "scoring_gemma2_27b", "next_token_logprobs", "lora_step"]
    for name in ("scoring_llama8b", "scoring_gemma2_27b"):
        s = sections[name]
        assert s["rank_correlation_naive_vs_ours"] > 0.999, name  # float32: same scores
        assert s["ours_candidates_per_s"] > 0 and s["naive_candidates_per_s"] > 0
    assert sections["next_token_logprobs"]["max_abs_logprob_difference"] < 1e-4
    assert sections["lora_step"]["seconds_per_step"] > 0 and sections["lora_step"]["pairs_per_step"] == 16


def test_gpu_benchmark_refuses_to_run_without_a_gpu_unless_dry(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--out", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "needs a CUDA device" in proc.stderr
