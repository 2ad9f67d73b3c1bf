"""pytest for the interop driver's pure helpers: `driver` importable from interop/."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
