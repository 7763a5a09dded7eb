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


class Aside:
    """`call` run in a thread of its own, on its own database connection, while the test's
    thread goes on (say, from inside a transaction that holds a lock)."""

    def __init__(self, call):
        self.result = None
        self.error: BaseException | None = None

        def work():
            try:
                self.result = call()
            except BaseException as error:  # reported by `done`
                self.error = error
            finally:
                connection.close()

        self.thread = threading.Thread(target=work)
        self.thread.start()

    def done(self, timeout: float) -> bool:
        """Whether the call has ended within `timeout` seconds (re-raising its error)."""
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        return not self.thread.is_alive()
