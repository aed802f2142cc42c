"""`python -m reconciler` is the same program as `portside`."""

import sys

from reconciler.cli import main

sys.exit(main())
