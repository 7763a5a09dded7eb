"""crm.jobs: background jobs start after commit; without a broker they run in a thread."""

import threading

import pytest
from django.db import transaction

from crm import jobs


class FakeTask:
    name = "tests.fake"

    def __init__(self):
        self.calls: list[tuple[tuple, str]] = []
        self.done = threading.Event()

    def apply(self, *, args, throw):
        self.calls.append((tuple(args), threading.current_thread().name))
        self.done.set()

    def delay(self, *args):
        self.calls.append((args, "delay"))


@pytest.mark.django_db(transaction=True)
def test_without_a_broker_a_job_runs_in_a_thread_after_commit(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.EMBEDDED_BACKGROUND_JOBS = True
    task = FakeTask()
    with transaction.atomic():
        jobs.enqueue(task, 7)
        assert task.calls == []  # nothing before the commit
    assert task.done.wait(5)
    assert task.calls == [((7,), "job:tests.fake")]


@pytest.mark.django_db(transaction=True)
def test_with_a_broker_a_job_is_a_celery_task(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    task = FakeTask()
    with transaction.atomic():
        jobs.enqueue(task, 7)
    assert task.calls == [((7,), "delay")]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_starts_nothing(settings):
    settings.EMBEDDED_BACKGROUND_JOBS = True
    task = FakeTask()
    with pytest.raises(RuntimeError), transaction.atomic():
        jobs.enqueue(task, 7)
        raise RuntimeError
    assert task.calls == []
