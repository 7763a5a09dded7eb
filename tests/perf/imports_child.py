"""One CSV import in a fresh process, for its peak memory (tests/perf/imports.py runs it).

Prints one line of JSON: timings, counts and the process's peak RSS.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    from tests.perf.child import setup_django

    setup_django()
    from tests.perf.imports import import_in_this_process

    print(json.dumps(import_in_this_process(Path(sys.argv[1]), keep=sys.argv[2:] == ["keep"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
