"""``python -m rmvalues.stages.scoring``: see :mod:`rmvalues.stages.scoring.cli`."""

import sys

from .cli import main

sys.exit(main())
