"""The benchmark's own tests: its instruments (bench/*.py) are scripts, imported from bench/ by name.

Run by hand with ``make bench-test``; the product's suite (``make test``) does not collect them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
