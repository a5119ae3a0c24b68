"""rmvalues: the library behind the reward-model value-bias audit book.

Layers, each importing only the ones before it: ``core`` (paths, files, provenance, parameter schemas, stage
hand-offs, errors) -> ``data`` (data sets, prompts, corpora, scores, preferences) -> ``models`` (registry,
loading) -> ``engine`` (token-exact inputs, the one forward engine, reward and log-prob scorers) -> ``stats``
-> ``stages.<chapter>`` (one package per book chapter: params, run, figures, text) ; ``book`` (runner, table
of contents, checks, command line). A stage never imports another stage.
"""

__version__ = "0.1.0"
