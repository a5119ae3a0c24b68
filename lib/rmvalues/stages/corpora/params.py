"""Parameters of the corpora chapter."""

from __future__ import annotations

from typing import Any, ClassVar

from ...core.params import StageParams, param
from ...data.corpora import corpora_entries_used
from ...data.corpus_checks import unknown_corpora_problem
from ...data.datasets import get as get_dataset
from ...data.norms import NORMS_DATASET
from ...models.loading import availability_problems
from ...models.registry import RegistryError, entries_used, registry


class Params(StageParams):
    """Which word lists to read and validate, and whose tokenizers count their tokens."""

    STAGE: ClassVar[str] = "corpora"

    corpora: list[str] = param(
        ["big2_nouns", "big2_expanded", "big2_dictionary", "mfd2"],
        help="corpora to read, validate and annotate (names in config/corpora.yaml)",
        min_length=1,
    )
    models: list[str] = param(
        ["gemma3-270m", "smollm2-135m-instruct"],
        help="registered models whose tokenizers count tokens per word ([] = no tokenization)",
    )
    tiny_category_threshold: int = param(
        10, help="categories with fewer scored words are flagged as tiny", ge=0
    )
    wordlist_size: int = param(
        50000, help="size of the wordfreq list that wildcard stems are expanded against", ge=1
    )

    def config_used(self) -> dict[str, Any]:
        """The corpus entries, files and word list, the tokenizers' registry entries and the norms file."""
        return {
            "corpora": corpora_entries_used(self.corpora),
            "models": entries_used(self.models),
            "norms": get_dataset(NORMS_DATASET).sha256,
        }

    def check(self) -> list[str]:
        problems = super().check()
        problems += unknown_corpora_problem(self.corpora)
        if len(set(self.corpora)) != len(self.corpora):
            problems.append(f"corpora lists a name twice: {self.corpora!r}")
        try:
            known = list(registry())
        except RegistryError as exc:
            return [*problems, f"models: the model registry is invalid: {exc}"]
        bad = [m for m in self.models if m not in known]
        if bad:
            problems.append(
                f"models: unknown model name(s) {', '.join(map(repr, bad))}. Valid models: {', '.join(known)} "
                "(see config/models.yaml)"
            )
        return problems + availability_problems(self.models)
