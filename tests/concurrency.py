"""Running calls at once in threads, each on its own database connection (PostgreSQL tests)."""

import threading

from django.db import connection


def run_together(*calls, timeout=60):
    """Run each call in its own thread, released together by a barrier; return their results.

    Every thread closes its own database connection, or the test database could not be
    dropped at the end of the session.
    """
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)
    errors = []

    def work(index, call):
        try:
            barrier.wait(timeout=10)
            results[index] = call()
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck (a deadlock?)"
    if errors:
        raise errors[0]
    return results
