"""`python -m spadegan.synthesize`: the `spadegan synthesize` command."""

import sys

from .cli import main

sys.exit(main())
