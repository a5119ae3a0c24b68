"""How the training chapter's probe settings were chosen: five-fold cross-validation inside the training pool.

Reads the cached pair features of a training run (``results/training/<run>/features``; run the chapter once
first) for the pairs of the grid's training pool only: the held-out pairs are never loaded. Each fold holds
out a fifth of the pool; probes are trained on 40, 128 and 400 pairs drawn from the other four fifths (two
draws per fold) with the same Bradley-Terry loss, AdamW and warmup-cosine schedule as TRL's
``RewardTrainer``, re-implemented in a few lines of torch so that the comparison takes minutes, and scored on
the fold's pairs. scikit-learn's L2 logistic regression on the standardized pair differences is the
reference. Prints the mean accuracy (and its standard error over the 10 fits) per setting, base model and
quantity.

    PYTHONPATH=lib python tools/probe_cv.py [grid] [run]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from transformers import get_cosine_schedule_with_warmup

from rmvalues.core import paths
from rmvalues.models import get_spec
from rmvalues.stages.training import config, features, grid
from rmvalues.stages.training.trainer import training_tokenizer

SETTINGS = {
    "raw, lr 1e-3, 10 epochs": dict(lr=1e-3, wd=0.0, epochs=10, std=False),
    "raw, lr 1e-2, 10 epochs": dict(lr=1e-2, wd=0.0, epochs=10, std=False),
    "standardized, lr 1e-3, 10 epochs": dict(lr=1e-3, wd=0.0, epochs=10, std=True),
    "standardized, lr 1e-2, 10 epochs": dict(lr=1e-2, wd=0.0, epochs=10, std=True),
    "standardized, lr 1e-3, 30 epochs": dict(lr=1e-3, wd=0.0, epochs=30, std=True),
    "standardized, lr 1e-3, 10 epochs, weight decay 1": dict(lr=1e-3, wd=1.0, epochs=10, std=True),
    "standardized, lr 1e-4, 10 epochs": dict(lr=1e-4, wd=0.0, epochs=10, std=True),
    "standardized, lr 3e-4, 10 epochs": dict(lr=3e-4, wd=0.0, epochs=10, std=True),
}
QUANTITIES = (40, 128, 400)


def train(xc, xr, lr, wd, epochs, std, seed, batch=16):
    """A Bradley-Terry linear head (AdamW, 3 % warmup then cosine), returned on the raw features."""
    if std:
        both = np.concatenate([xc, xr])
        mu, sd = both.mean(0), both.std(0) + 1e-6
        xc, xr = (xc - mu) / sd, (xr - mu) / sd
    else:
        sd = np.ones(xc.shape[1])
    xc, xr = torch.tensor(xc, dtype=torch.float32), torch.tensor(xr, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    w = torch.zeros(xc.shape[1]).normal_(0, 0.02, generator=gen).requires_grad_(True)
    opt = torch.optim.AdamW([w], lr=lr, weight_decay=wd)
    steps = epochs * math.ceil(len(xc) / batch)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(0.03 * steps), steps)
    for _ in range(epochs):
        perm = torch.randperm(len(xc), generator=gen)
        for b in range(0, len(xc), batch):
            i = perm[b : b + batch]
            loss = -torch.nn.functional.logsigmoid((xc[i] - xr[i]) @ w).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return w.detach().numpy() / sd


def main() -> int:
    grid_name = sys.argv[1] if len(sys.argv) > 1 else "default"
    run = sys.argv[2] if len(sys.argv) > 2 else "default"
    spec = config.grid_spec(grid_name)
    bases = {m: get_spec(m) for m in spec.models}
    toks = {m: training_tokenizer(bases[m]) for m in spec.models}
    sel = grid.prepare_data(spec, toks)[spec.sources[0]]
    pool = list(sel.train_ids)  # the training pool only: sel.eval_ids are never read
    root = paths.results_root() / "training" / run
    torch.set_num_threads(1)
    for m in spec.models:
        f = features.pair_features(None, toks[m], bases[m], sel, pool, Path(root), 32)  # cached: no model
        xc = np.stack([f[i][0] for i in pool]).astype(np.float64)
        xr = np.stack([f[i][1] for i in pool]).astype(np.float64)
        order = np.random.default_rng(0).permutation(len(pool))
        folds = np.array_split(order, 5)
        res: dict[str, dict[int, list[float]]] = {}
        for k, test in enumerate(folds):
            rest = np.setdiff1d(order, test)
            for n in QUANTITIES:
                for s in range(2):
                    tr = np.random.default_rng([k, s]).permutation(rest)[:n]
                    d_test = xc[test] - xr[test]
                    for name, kw in SETTINGS.items():
                        w = train(xc[tr], xr[tr], seed=s, **kw)
                        res.setdefault(name, {}).setdefault(n, []).append(float(np.mean(d_test @ w > 0)))
                    both = np.concatenate([xc[tr], xr[tr]])
                    sd = both.std(0) + 1e-6
                    d = (xc[tr] - xr[tr]) / sd
                    x, y = np.concatenate([d, -d]), np.r_[np.ones(n), np.zeros(n)]
                    for c in (1.0, 0.1, 0.01):
                        lr = LogisticRegression(C=c, fit_intercept=False, max_iter=2000).fit(x, y)
                        acc = float(np.mean((d_test / sd) @ lr.coef_[0] > 0))
                        res.setdefault(f"scikit-learn L2 logistic, C={c}", {}).setdefault(n, []).append(acc)
        print(m)
        for name, r in res.items():
            cells = [f"n={n}: {np.mean(v):.3f} +- {np.std(v) / np.sqrt(len(v)):.3f}" for n, v in r.items()]
            print(f"  {name:52s}", "  ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
