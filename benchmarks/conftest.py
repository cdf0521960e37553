"""The test suite's session fixtures — a private PostgreSQL cluster, a migrated database, API keys, the
gRPC server and the Envoy gateway — for the pytest-benchmark tests in this folder:

    .venv/bin/pytest benchmarks --benchmark-only
"""

import sys
from pathlib import Path

# With --import-mode=importlib pytest puts no folder on sys.path, so `tests` (a sibling package)
# is importable only from the repository root.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.conftest import *  # noqa: E402,F401,F403
