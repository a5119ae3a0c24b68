"""One package per book chapter (``rmvalues.stages.<chapter>``), each with the same parts:

``params.py``   ONE parameter schema (:class:`rmvalues.core.params.StageParams`): defaults, types, allowed
                values, help, stage-level checks and the upstream outputs the run reads;
``run.py``      ``run(params, record=None) -> Results``: the stage as named steps; writes every output file
                and the manifest through a :class:`rmvalues.core.manifest.RunRecord`;
``figures.py``  matplotlib figures from the results;  ``text.py``: sentences built from the numbers.

A stage imports only the lower layers (core, data, models, engine, stats), never another stage; what two
stages share lives in a lower layer. Each package exposes ``Params``, ``Results`` and ``run``.
"""
