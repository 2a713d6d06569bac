"""Entry point of ``python3 -m tests.harness``."""

import sys

from .cli import main

sys.exit(main())
