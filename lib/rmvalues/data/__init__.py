"""Data layer: external data sets by URL + sha256 (:mod:`.datasets`), the paper's prompts (:mod:`.prompts`),
corpora and their validation and confounds (:mod:`.corpora`, :mod:`.corpus_checks`, :mod:`.norms`), the long
scores table (:mod:`.scores`) and preference pairs (:mod:`.preferences`). Imports only :mod:`rmvalues.core`."""
