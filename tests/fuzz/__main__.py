"""`python -m tests.fuzz ...`: see tests/fuzz/cli.py."""
import sys

from .cli import main

sys.exit(main())
