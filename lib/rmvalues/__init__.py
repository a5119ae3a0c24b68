"""rmvalues: helper library of the reward-model value-bias audit book.

Modules are named for what they do: ``data`` (external data sets by URL + sha256, offline mirror),
``models`` (model registry, embedded offline models), ``corpora`` (word lists, validation),
``runner`` (papermill stages, run configs), ``manifest`` (provenance), ``statistics`` and ``scores``.
"""

__version__ = "0.1.0"
