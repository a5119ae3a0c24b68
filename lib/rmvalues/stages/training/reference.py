"""The converged reference beside every trained probe: an L2 logistic regression on the same features and pairs.

A linear Bradley-Terry head ``w`` on features ``x`` with an L2 penalty minimises

    J(w) = (1/n) sum_i -log sigmoid(w . d_i) + (lambda / 2) |w|^2,      d_i = x_chosen,i - x_rejected,i

(the reward is ``w . x`` with no bias, so only differences enter). scikit-learn's ``LogisticRegression``
without intercept minimises ``C sum_j logloss(y_j, w . z_j) + |w|^2 / 2``. On the 2n rows ``(d_i, 1)`` and
``(-d_i, 0)`` both rows of pair i cost ``-log sigmoid(w . d_i)``, so that objective is
``2 C sum_i -log sigmoid(w . d_i) + |w|^2 / 2 = 2 C n [J(w) - lambda |w|^2 / 2] + |w|^2 / 2``, which equals
``2 C n J(w)`` (same minimiser) exactly when ``lambda = 1 / (2 C n)``, i.e. ``C = 1 / (2 n lambda)``. ``J``
is strictly convex for ``lambda > 0``: one optimum, whatever the head's random start or the batch order.

:func:`logistic_reference` fits it (L-BFGS to a tight tolerance); :func:`objective` and :func:`gradient_norm`
measure how far a trained head is from that optimum (the convergence measure recorded per cell).
"""

from __future__ import annotations

import numpy as np

__all__ = ["REFERENCE_TOL", "gradient_norm", "logistic_reference", "objective", "sklearn_c"]

#: L-BFGS tolerance of the reference fit.
REFERENCE_TOL = 1e-10


def sklearn_c(n_pairs: int, l2: float) -> float:
    """scikit-learn's ``C`` giving the same optimum as a BT head with penalty ``l2`` on ``n_pairs`` pairs."""
    if l2 <= 0 or n_pairs < 1:
        raise ValueError(f"the reference needs l2 > 0 and pairs >= 1 (got l2={l2}, pairs={n_pairs})")
    return 1.0 / (2.0 * n_pairs * l2)


def logistic_reference(d: np.ndarray, l2: float) -> np.ndarray:
    """The minimiser of :func:`objective` over ``d`` (rows: chosen - rejected features), by scikit-learn."""
    from sklearn.linear_model import LogisticRegression

    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    x = np.concatenate([d, -d])
    y = np.r_[np.ones(n), np.zeros(n)]
    fit = LogisticRegression(C=sklearn_c(n, l2), fit_intercept=False, tol=REFERENCE_TOL, max_iter=10000)
    return fit.fit(x, y).coef_[0].astype(np.float64)


def objective(w: np.ndarray, d: np.ndarray, l2: float) -> float:
    """``J(w)``: mean Bradley-Terry loss over the pairs plus ``l2 / 2 |w|^2``."""
    m = np.asarray(d, dtype=np.float64) @ np.asarray(w, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, -m)) + 0.5 * l2 * float(np.dot(w, w)))


def gradient_norm(w: np.ndarray, d: np.ndarray, l2: float) -> float:
    """Euclidean norm of the gradient of ``J`` at ``w`` (0 at the optimum)."""
    d = np.asarray(d, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    m = d @ w
    weight = 0.5 * (1.0 - np.tanh(0.5 * m))  # sigmoid(-m), stable
    grad = -(d * weight[:, None]).mean(axis=0) + l2 * w
    return float(np.linalg.norm(grad))


def differences(
    feats: dict[int, tuple[np.ndarray, np.ndarray]], ids: list[int], scale: np.ndarray | None
) -> np.ndarray:
    """Rows ``(chosen - rejected) / scale`` of pairs ``ids`` (the space the head was trained in: divided by the
    cell's per-dimension sd when its features were standardized; the mean cancels in a difference)."""
    if not ids:
        return np.zeros((0, 0))
    d = np.stack([feats[i][0].astype(np.float64) - feats[i][1] for i in ids])
    return d / np.asarray(scale, dtype=np.float64) if scale is not None else d


def probe_check(
    heads: dict[int, np.ndarray],
    scale: np.ndarray | None,
    feats: dict[int, tuple[np.ndarray, np.ndarray]],
    train_ids: list[int],
    eval_ids: list[int],
    l2: float,
) -> tuple[dict[str, float], np.ndarray | None]:
    """Convergence of a trained probe and its logistic reference: ``(metrics, reference head on the raw
    hidden states)`` (None without a penalty: the unpenalised optimum of separable data is at infinity).

    ``heads``: step -> head on the raw hidden states (as saved). Metrics: ``objective_end`` (J at the last
    step), ``objective_change`` (relative change of J between the last two recorded steps),
    ``grad_norm_end`` (|grad J| at the last step), ``reference_objective``, ``reference_eval_accuracy``
    (held-out pairs ranked correctly by the reference; a tie is wrong, as in TRL), ``reference_distance``
    (|w - w_ref| / |w_ref| in the trained space) and ``reference_agreement`` (held-out pairs on which the
    head and the reference prefer the same answer)."""
    nan = float("nan")
    out = dict.fromkeys(
        (
            "objective_end",
            "objective_change",
            "grad_norm_end",
            "reference_objective",
            "reference_eval_accuracy",
            "reference_distance",
            "reference_agreement",
        ),
        nan,
    )
    if l2 <= 0 or not train_ids:
        return out, None
    s = np.ones_like(next(iter(heads.values())), dtype=np.float64) if scale is None else scale
    steps = sorted(heads)
    trained = {k: np.asarray(heads[k], np.float64) * s for k in steps[-2:]}  # back to the trained space
    d_train = differences(feats, train_ids, scale)
    w = trained[steps[-1]]
    out["objective_end"] = objective(w, d_train, l2)
    if len(steps) > 1:
        before = objective(trained[steps[-2]], d_train, l2)
        out["objective_change"] = abs(before - out["objective_end"]) / max(abs(out["objective_end"]), 1e-12)
    out["grad_norm_end"] = gradient_norm(w, d_train, l2)
    ref = logistic_reference(d_train, l2)
    out["reference_objective"] = objective(ref, d_train, l2)
    out["reference_distance"] = float(np.linalg.norm(w - ref) / max(np.linalg.norm(ref), 1e-12))
    if eval_ids:
        d_eval = differences(feats, eval_ids, scale)
        m_ref, m = d_eval @ ref, d_eval @ w
        out["reference_eval_accuracy"] = float(np.mean(m_ref > 0))
        out["reference_agreement"] = float(np.mean((m_ref > 0) == (m > 0)))
    return out, ref / s
