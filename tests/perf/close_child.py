"""One close in a fresh process, for its memory (tests/perf/close.py runs it).

Prints one line of JSON: the tracemalloc peak and the growth of the peak RSS.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings.local")
    import django

    django.setup()
    from django.conf import settings

    settings.DEBUG = False
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    from tests.perf.close import measure_memory

    print(json.dumps(measure_memory()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
