"""One CSV import in a fresh process, for its peak memory (tests/perf/imports.py runs it).

Prints one line of JSON: timings, counts and the process's peak RSS.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings.local")
    import django

    django.setup()
    from django.conf import settings

    settings.DEBUG = False
    from tests.perf.imports import import_in_this_process

    print(json.dumps(import_in_this_process(Path(sys.argv[1]), keep=sys.argv[2:] == ["keep"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
