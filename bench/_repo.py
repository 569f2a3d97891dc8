"""Imported first by the bench scripts: `python bench/x.py` puts bench/ on `sys.path`, not the
repository root, so this adds the root for what the scripts share with the tests
(`tests.support`: the server launcher, the port helper, the machine description)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
