import sys
from pathlib import Path

# Imported before pytester snapshots sys.modules, so inline runs reuse it
# instead of reloading NumPy (which warns).
import numpy  # noqa: F401

sys.path.insert(0, str(Path(__file__).parent))
