"""Parameters of the implicit-rewards chapter."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

from ...core.handoff import StageInput
from ...core.params import (
    CountBound,
    StageParams,
    Threads,
    batch_size_field,
    param,
    run_name_problem,
    threads_field,
)
from ...data.corpora import corpora_input, corpora_run_problem, list_corpora
from ...data.corpus_checks import corpora_run_field
from ...data.prompts import FRAMINGS, framing_of, prompt_ids, prompt_problem, prompts_checksum
from ...engine.inputs import PROMPT_FORMATS, PromptFormatError, resolve_prompt_format
from ...models.loading import availability_problems
from ...models.registry import ModelSpec, RegistryError, entries_used, registry
from .metrics import DUPLICATE_RULES

METRICS = ("token_mwlr", "token_logratio", "word_mwlr", "word_logratio", "word_sum", "word_mean")
PAIR_METRICS = ("token_mwlr", "token_logratio", "word_mwlr", "word_logratio")
TOKEN_METRICS = ("token_mwlr", "token_logratio")
SINGLE_METRICS = ("word_sum", "word_mean")
Metric = Literal["token_mwlr", "token_logratio", "word_mwlr", "word_logratio", "word_sum", "word_mean"]
Format = Literal["auto", "chat", "raw"]
Duplicates = Literal["max", "sum"]

#: The all-words analysis's default prompt subset (CPU budget: multi-token words cost forward passes): two
#: positive prompts and their negative mirrors (same frame and concision style; best <-> worst, greatest <->
#: terrible), so framing is not confounded with the wording. The single-token analysis uses all 54 prompts.
DEFAULT_PROMPTS = ["best_ever_one", "greatest_time_please", "worst_ever_one", "terrible_time_please"]
#: Ten MFD 2.0 Authority (virtue) words planted by the validation fine-tune (the paper planted ten
#: "authority" words).
DEFAULT_PLANTED = [
    "authority",
    "obedience",
    "duty",
    "hierarchy",
    "tradition",
    "respect",
    "leader",
    "order",
    "command",
    "compliance",
]
#: Prompts the validation fine-tune trains on (held out from the evaluation prompts).
DEFAULT_PLANTED_TRAIN = ["good_world_single", "bad_world_single"]
#: Learning rates of the graded planted-word validation (each ``planted_strength_steps`` AdamW steps), weakest
#: first: the strongest is the main validation's plant (3 steps at 3e-4, reused, where the metrics saturate), the
#: others run down to a plant of 3 steps at 1e-8 (AdamW moves every weight by about the learning rate per step).
#: Measured on the development machine (2 cores): the implicit stage took 259 s with these strengths and 251 s with
#: one step at 1e-6, 1e-5, 1e-4 and 1e-3, which saturated no metric and was not monotone in strength.
DEFAULT_STRENGTHS = [1e-8, 1e-6, 1e-5, 3e-4]
#: Optimizer steps of each graded plant: the main plant's, so that its strongest level is the main plant.
DEFAULT_STRENGTH_STEPS = 3
#: Evaluation prompts of the graded validation's word level: one of every adjective, every frame and style
#: twice, each positive prompt mirrored by a negative one, none a training prompt (CPU budget: the word level
#: scores every candidate word under every prompt for every plant); the token level uses every prompt of
#: `prompts` but the training prompts.
DEFAULT_STRENGTH_PROMPTS = [
    "best_ever_one", "greatest_world_please", "good_time_single",
    "worst_ever_one", "terrible_world_please", "bad_time_single",
]  # fmt: skip
#: Bounds checked before any work (:class:`~rmvalues.core.params.CountBound`; times on the development machine,
#: 2 CPU cores).
PLANTED_BOOTSTRAP = CountBound(
    100_000,
    "the validation's statistics take about 7 ms per replicate on 2 cores: 100,000 take about 12 min",
    bytes_each=2_000,
    per="replicate, its drawn prompts and planted words all held at once",
)
BATCH = CountBound(
    1024,
    "a prompt batch holds batch x vocabulary log-probabilities (1,024 x 262,144 x 4 bytes = 1 GiB for Gemma 3) "
    "and a continuation batch is capped at 512 positions anyway",
)


def resolve_pairs(
    models: Sequence[str], pairs: str | Sequence[Sequence[str]], families: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """The model pairs: ``[]`` = every pair in ``models`` order (first = reference ``p``),
    ``"cross-family"`` (or ``["cross-family"]``) = the pairs of different families, else explicit ``[p, q]``."""
    if not pairs:
        return list(itertools.combinations(models, 2))
    if pairs == "cross-family" or list(pairs) == ["cross-family"]:
        fam = dict(families or {})
        return [(a, b) for a, b in itertools.combinations(models, 2) if fam.get(a) != fam.get(b)]
    return [(str(a), str(b)) for a, b in pairs]


class Params(StageParams):
    """Which language models, pairs, corpora, prompts and metrics; the planted-word validation."""

    STAGE: ClassVar[str] = "implicit"

    models: list[str] = param(
        ["gemma3-270m", "smollm2-135m-instruct"], help="registered causal LMs", min_length=1
    )
    pairs: Literal["cross-family"] | list[list[str]] | list[Literal["cross-family"]] = param(
        [], help="[] = every pair of `models` (first = reference p); 'cross-family'; or explicit [p, q] pairs"
    )
    corpora: list[str] = param(["big2_nouns", "mfd2"], help="corpora whose words are scored", min_length=1)
    corpora_run: str = corpora_run_field("the words whose log-probabilities are computed")
    prompts: list[str] = param(
        [], help="prompt ids of the single-token analysis and the token-level rewards ([] = all 54)"
    )
    word_prompts: list[str] = param(
        list(DEFAULT_PROMPTS),
        help="prompt ids of the all-words analysis, the word-level rewards, the contrast and the word-level "
        "validation ([] = the same as `prompts`)",
    )
    duplicates: Duplicates = param(
        "max",
        help="token ids with the same decoded string: 'max' = the highest log-prob (the paper's rule), 'sum' = "
        "the summed probability",
    )
    prompt_format: Format | dict[str, Format] = param(
        "auto", help="auto (chat for instruction-tuned, raw for pretrained), chat, raw, or {model: format}"
    )
    include_end_of_turn: bool = param(False, help="add the end-of-turn token's log-prob to a word's")
    metrics: list[Metric] = param(
        ["token_mwlr", "word_mwlr", "word_logratio", "word_sum", "word_mean"],
        help=f"implicit-reward metrics ({', '.join(METRICS)})",
        min_length=1,
    )
    contrast: list[str] = param(["freedom", "love"], help="the word pair of the Fig. 3 contrast")
    top_k: int = param(15, help="top and bottom tokens shown per pair", ge=1)
    planted_model: str = param(
        "smollm2-135m-instruct", help="model of the planted-word validation ('' = skip)"
    )
    planted_words: list[str] = param(list(DEFAULT_PLANTED), help="words the validation fine-tune plants")
    planted_train_prompts: list[str] = param(
        list(DEFAULT_PLANTED_TRAIN), help="prompt ids the validation fine-tune trains on"
    )
    planted_steps: int = param(3, help="optimizer steps of the validation fine-tune", ge=1)
    planted_lr: float = param(3e-4, help="learning rate of the validation fine-tune", gt=0)
    planted_strengths: list[float] = param(
        list(DEFAULT_STRENGTHS),
        help="learning rates of the graded validation (weakest first; [] = skip): the plant and the sham plant "
        "at each, to find the weakest plant each metric detects",
    )
    planted_strength_steps: int = param(
        DEFAULT_STRENGTH_STEPS,
        help="optimizer steps of each graded plant (where it equals planted_steps, the main plant is reused at "
        "planted_lr)",
        ge=1,
    )
    planted_strength_prompts: list[str] = param(
        list(DEFAULT_STRENGTH_PROMPTS),
        help="prompt ids of the graded validation's word level (none a training prompt; [] = every prompt but "
        "the training prompts)",
    )
    planted_cross_model: str = param(
        "auto",
        help="reference of the cross-tokenizer validation: one of `models` ('auto' = the first of another "
        "family than planted_model; '' = skip)",
    )
    planted_bootstrap: Annotated[int, PLANTED_BOOTSTRAP] = param(
        1000, help="bootstrap replicates of the validation's pass criterion (prompts x planted words)", ge=10
    )
    extra_registry: list[str] = param([], help="more model-registry files (e.g. config/paper_models.yaml)")
    batch_size: Annotated[int, BATCH] = batch_size_field("continuations (or prompts)")
    device: Literal["auto", "cpu", "cuda"] = param("auto", help="'auto' = cuda when available")
    threads: Threads = threads_field()
    seed: int = param(0, help="seed of the validation fine-tune", ge=0)

    # -- hand-offs ---------------------------------------------------------------------------------------------
    def corpora_input(self) -> StageInput:
        return corpora_input(self.corpora_run, "the words whose log-probabilities are computed", self.corpora)

    def reads(self) -> list[StageInput]:
        return [self.corpora_input()]

    def config_used(self) -> dict[str, Any]:
        """The registry entries of the models (and the planted model) and the prompts file."""
        names = [*self.models, *([self.planted_model] if self.planted_model else [])]
        return {"models": entries_used(names, self.extra_registry), "prompts": prompts_checksum()}

    def format_of(self, model: str) -> str:
        """The requested prompt format of ``model`` (before ``auto`` is resolved)."""
        fmt = self.prompt_format
        return fmt.get(model, "auto") if isinstance(fmt, Mapping) else fmt

    def word_prompt_ids(self) -> list[str]:
        """The prompts of the all-words analysis (``word_prompts``, or ``prompts`` when it is ``[]``)."""
        return list(self.word_prompts) or list(self.prompts)

    def cross_model(self, families: Mapping[str, str]) -> str:
        """The reference of the cross-tokenizer validation (``''`` = none): ``planted_cross_model``, or with
        ``'auto'`` the first of ``models`` whose family differs from ``planted_model``'s."""
        if not self.planted_model or not self.planted_cross_model:
            return ""
        if self.planted_cross_model != "auto":
            return self.planted_cross_model
        own = families.get(self.planted_model)
        return next((m for m in self.models if m != self.planted_model and families.get(m) != own), "")

    def specs(self) -> dict[str, ModelSpec]:
        reg = registry(extra=self.extra_registry)
        return {m: reg[m] for m in self.models}

    # -- checks ------------------------------------------------------------------------------------------------
    def check(self) -> list[str]:
        problems = super().check()
        if p := run_name_problem("corpora_run", self.corpora_run):
            problems.append(p)
        try:
            reg = registry(extra=self.extra_registry)
        except (RegistryError, OSError) as exc:
            return [*problems, f"extra_registry: {exc}"]
        problems += self._model_problems(reg)
        problems += self._corpus_and_prompt_problems()
        if len(self.contrast) != 2 or self.contrast[0] == self.contrast[1] or not all(self.contrast):
            problems.append(f"contrast={self.contrast!r}: give two different words, e.g. ['freedom', 'love']")
        problems += self._planted_problems(reg)
        if not problems:
            wanted = [*self.models, *([self.planted_model] if self.planted_model else [])]
            problems += availability_problems(list(dict.fromkeys(wanted)), self.extra_registry)
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                problems.append("device='cuda' but no CUDA device is available here; use 'cpu' or 'auto'")
        return problems

    def _model_problems(self, reg: Mapping[str, ModelSpec]) -> list[str]:
        lms = sorted(n for n, s in reg.items() if s.kind == "causal-lm")
        problems = []
        bad = [m for m in self.models if m not in lms]
        if bad:
            return [
                f"models: {bad} are not registered causal LMs; registered: {lms} (add models in "
                "config/models.yaml or a file in extra_registry)"
            ]
        if len(set(self.models)) != len(self.models):
            problems.append(f"models={self.models!r}: a model is listed twice")
        if isinstance(self.pairs, list) and self.pairs and self.pairs != ["cross-family"]:
            for pair in self.pairs:
                if len(pair) != 2:
                    problems.append(f"pairs: {pair} is not a [p, q] pair")
                elif pair[0] == pair[1]:
                    problems.append(f"pairs: [{pair[0]}, {pair[1]}] pairs a model with itself")
                elif pair[0] not in self.models or pair[1] not in self.models:
                    problems.append(f"pairs: {pair} uses a model not in `models` ({self.models})")
        if any(m in PAIR_METRICS for m in self.metrics) and len(self.models) < 2:
            wanted = [m for m in self.metrics if m in PAIR_METRICS]
            problems.append(f"metrics {wanted} compare two models; give at least two models")
        if isinstance(self.prompt_format, Mapping):
            stray = [k for k in self.prompt_format if k not in self.models]
            if stray:
                problems.append(
                    f"prompt_format: {stray} are not in `models`; give {{model: format}} for them"
                )
        if problems:
            return problems
        return self._format_problems(reg)

    def _format_problems(self, reg: Mapping[str, ModelSpec]) -> list[str]:
        problems, resolved = [], {}
        for m in self.models:
            try:
                resolved[m] = resolve_prompt_format(reg[m], self.format_of(m))
            except PromptFormatError as exc:
                problems.append(str(exc))
        if "token_logratio" in self.metrics and len(resolved) == len(self.models):
            families = {m: reg[m].family for m in self.models}
            for a, b in resolve_pairs(self.models, self.pairs, families):
                if resolved[a] != resolved[b]:
                    problems.append(
                        f"token_logratio compares two models on the same prompt x, but {a!r} is prompted "
                        f"{resolved[a]} and {b!r} {resolved[b]}; set prompt_format to 'chat' or 'raw' for both"
                    )
        return problems

    def _corpus_and_prompt_problems(self) -> list[str]:
        known = list_corpora()
        bad = [c for c in self.corpora if c not in known]
        if bad:
            return [f"corpora: unknown {bad}; registered corpora: {known}"]
        problems = corpora_run_problem(self.corpora_input(), self.corpora, self.results_root)
        for name, ids in (("prompts", self.prompts), ("word_prompts", self.word_prompts)):
            if (p := prompt_problem(ids, name)) is not None:
                return [*problems, p]
            sel = ids or (self.prompts if name == "word_prompts" else []) or prompt_ids()
            per = {f: sum(framing_of(x) == f for x in sel) for f in FRAMINGS}
            if min(per.values()) < 2:
                problems.append(
                    f"{name}: the ANOVA needs at least two prompts per framing; this selection has {per}"
                )
        if self.duplicates not in DUPLICATE_RULES:  # pragma: no cover - the schema's Literal checks first
            problems.append(f"duplicates={self.duplicates!r}; valid: {', '.join(DUPLICATE_RULES)}")
        return problems

    def _planted_problems(self, reg: Mapping[str, ModelSpec]) -> list[str]:
        if not self.planted_model:
            return []
        problems = []
        lms = sorted(n for n, s in reg.items() if s.kind == "causal-lm")
        if self.planted_model not in lms:
            problems.append(
                f"planted_model={self.planted_model!r}: not a registered causal LM; registered: {lms} ('' = skip)"
            )
        pw = self.planted_words
        if not pw or len(set(pw)) != len(pw) or not all(w.strip() for w in pw):
            problems.append(f"planted_words={pw!r}: give a list of distinct non-empty words")
        if not self.planted_train_prompts or prompt_problem(self.planted_train_prompts):
            problems.append(
                f"planted_train_prompts={self.planted_train_prompts!r}: give a non-empty list of prompt ids "
                "(e.g. 'best_world_please')"
            )
        evals = [
            x
            for x in (self.word_prompts or self.prompts or prompt_ids())
            if x not in self.planted_train_prompts
        ]
        if len(evals) < 2:
            problems.append(
                f"planted_train_prompts={self.planted_train_prompts!r} leave {len(evals)} of the word prompts to "
                "evaluate the validation on; it needs at least two (the bootstrap resamples them)"
            )
        problems += self._strength_problems()
        cross = self.planted_cross_model
        if cross not in ("", "auto") and (cross not in self.models or cross == self.planted_model):
            problems.append(
                f"planted_cross_model={cross!r}: give one of `models` other than planted_model "
                f"({[m for m in self.models if m != self.planted_model]}), 'auto' or '' (skip)"
            )
        return problems

    def strength_prompt_ids(self) -> list[str]:
        """The graded validation's word-level prompts (``planted_strength_prompts``, or with ``[]`` every
        prompt but the training prompts)."""
        return list(self.planted_strength_prompts) or [
            x for x in prompt_ids() if x not in self.planted_train_prompts
        ]

    def _strength_problems(self) -> list[str]:
        s = self.planted_strengths
        if not s:
            return []
        problems = []
        if any(not x > 0 for x in s) or len(set(s)) != len(s) or list(s) != sorted(s):
            problems.append(
                f"planted_strengths={s!r}: give distinct positive learning rates, weakest first "
                "(e.g. [1e-6, 1e-5, 1e-4])"
            )
        ids = self.planted_strength_prompts
        if (p := prompt_problem(ids, "planted_strength_prompts")) is not None:
            return [*problems, p]
        both = sorted(set(ids) & set(self.planted_train_prompts))
        if both:
            problems.append(
                f"planted_strength_prompts: {both} are training prompts of the plant (planted_train_prompts); "
                "evaluate on other prompts"
            )
        elif len(self.strength_prompt_ids()) < 2:
            problems.append(
                "planted_strength_prompts: give at least two prompts (the bootstrap resamples them)"
            )
        return problems


__all__ = [
    "DEFAULT_PLANTED",
    "DEFAULT_PLANTED_TRAIN",
    "DEFAULT_PROMPTS",
    "DEFAULT_STRENGTHS",
    "DEFAULT_STRENGTH_PROMPTS",
    "METRICS",
    "PAIR_METRICS",
    "PROMPT_FORMATS",
    "SINGLE_METRICS",
    "TOKEN_METRICS",
    "Params",
    "resolve_pairs",
]
