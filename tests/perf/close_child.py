"""One close in a fresh process, for its memory (tests/perf/close.py runs it).

Prints one line of JSON: the tracemalloc peak and the growth of the peak RSS.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    from tests.perf.child import setup_django

    settings = setup_django()
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    from tests.perf.close import measure_memory

    print(json.dumps(measure_memory()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
