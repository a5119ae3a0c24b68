"""The project's error types: each says what is wrong, the valid choices and how to fix it.

Every error a user can cause derives from :class:`RmvaluesError`, so the command line can print the message
(without a traceback) and exit non-zero. The layers raise their own subclasses:

=========================  ===================================================================================
:class:`ConfigError`       a configuration file or a requested parameter is invalid (before any work starts)
:class:`ParameterError`    a stage's parameters fail their schema (a :class:`ConfigError`)
:class:`MissingInputError` an upstream stage output a run reads is absent or damaged ("run stage X first")
:class:`DataError`         a data set cannot be obtained or fails its checksum (defined in ``rmvalues.data``)
=========================  ===================================================================================
"""

from __future__ import annotations


class RmvaluesError(Exception):
    """Base class of the errors a user can cause (bad input, missing data, missing upstream outputs)."""


class ConfigError(RmvaluesError, ValueError):
    """The run configuration or the requested parameters are invalid (raised before any work starts)."""


class ParameterError(ConfigError):
    """A stage's parameters fail its schema; the message lists every problem with its fix."""

    def __init__(self, stage: str, problems: list[str]) -> None:
        self.stage = stage
        self.problems = list(problems)
        super().__init__(f"invalid {stage} parameters:\n  - " + "\n  - ".join(self.problems))


class MissingInputError(RmvaluesError, FileNotFoundError):
    """An output of an upstream stage that a run reads is missing, or does not match its manifest."""
