"""The read-replica router: API list pages and export chunks read the replica when one is
configured; writes, transactions and every other read stay on the primary."""

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from contacts.models import Contact
from crm import replica
from crm.replica import ReplicaRouter, replica_iter, replica_reads
from crm.settings.base import replica_databases_from_env
from tests.factories import ContactFactory


@pytest.fixture
def with_replica(monkeypatch):
    monkeypatch.setattr(replica, "replica_alias", lambda: "replica")


@pytest.fixture
def routed(monkeypatch):
    """Every Contact read, with whether it was made inside replica_reads(). The "replica" is
    the test database itself, so the reads work."""
    seen: list[bool] = []
    original = ReplicaRouter.db_for_read
    monkeypatch.setattr(replica, "replica_alias", lambda: "default")

    def spy(self, model, **hints):
        if model is Contact:
            seen.append(replica._replica_reads.get())
        return original(self, model, **hints)

    monkeypatch.setattr(ReplicaRouter, "db_for_read", spy)
    return seen


def test_without_a_replica_every_read_is_the_primarys():
    with replica_reads():
        assert ReplicaRouter().db_for_read(Contact) is None


@pytest.mark.django_db(transaction=True)
def test_with_a_replica_only_reads_inside_replica_reads_go_there(with_replica):
    router = ReplicaRouter()
    assert router.db_for_read(Contact) is None
    with replica_reads():
        assert router.db_for_read(Contact) == "replica"
        assert router.db_for_write(Contact) is None
        with transaction.atomic():  # a transaction reads what it writes: the primary
            assert router.db_for_read(Contact) is None
    assert router.db_for_read(Contact) is None


def test_migrations_never_run_on_the_replica():
    assert ReplicaRouter().allow_migrate("replica", "contacts") is False
    assert ReplicaRouter().allow_migrate("default", "contacts") is True


def test_replica_iter_sets_the_flag_only_while_an_item_is_made():
    def made():
        for n in range(3):
            yield n, replica._replica_reads.get()

    for _n, inside in replica_iter(made()):
        assert inside is True
        assert replica._replica_reads.get() is False


@pytest.mark.django_db(transaction=True)
def test_an_api_list_page_reads_the_replica(account, superuser, routed):
    ContactFactory.create_batch(3)
    client = APIClient()
    client.force_authenticate(superuser)
    response = client.get("/api/contacts/")
    assert response.status_code == 200 and len(response.data["results"]) == 3
    assert True in routed


@pytest.mark.django_db(transaction=True)
def test_a_retrieve_reads_the_primary(account, superuser, routed):
    contact = ContactFactory()
    client = APIClient()
    client.force_authenticate(superuser)
    assert client.get(f"/api/contacts/{contact.pk}/").status_code == 200
    assert routed and True not in routed


@pytest.mark.django_db(transaction=True)
def test_each_export_chunk_reads_the_replica(account, superuser, routed):
    ContactFactory.create_batch(3)
    client = APIClient()
    client.force_authenticate(superuser)
    response = client.get("/api/contacts/export/")
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    assert body.count("\n") == 4  # the header and three contacts
    assert True in routed


def test_the_replica_alias_comes_from_database_replica_url(monkeypatch):
    monkeypatch.delenv("DATABASE_REPLICA_URL", raising=False)
    assert replica_databases_from_env() == {}
    monkeypatch.setenv("DATABASE_REPLICA_URL", "postgres://reader@replica.internal:5432/crm")
    config = replica_databases_from_env()["replica"]
    assert (config["HOST"], config["USER"], config["NAME"]) == ("replica.internal", "reader", "crm")
    assert config["TEST"] == {"MIRROR": "default"}
