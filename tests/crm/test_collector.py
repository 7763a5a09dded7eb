"""The cycle collector is paused for a bulk loop and left as it was found."""

import gc

import pytest

from crm.collector import collector_paused


@pytest.fixture
def collector_restored():
    enabled = gc.isenabled()
    yield
    (gc.enable if enabled else gc.disable)()


def test_paused_inside_and_running_again_after(collector_restored):
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # a nested pause does not restart it early
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_running_again_after_an_error(collector_restored):
    gc.enable()
    with pytest.raises(ValueError), collector_paused():
        raise ValueError("the loop failed")
    assert gc.isenabled()


def test_a_collector_paused_by_someone_else_stays_paused(collector_restored):
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_the_production_workers_freeze_the_loaded_application(collector_restored):
    from crm import gunicorn

    gc.unfreeze()
    try:
        gunicorn.post_worker_init(worker=None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
