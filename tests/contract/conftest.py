"""Fixtures of the contract suite: who calls, the seeded objects and the schema under test.

Each identity gets its own run over the operations it may call: a staff user of each role
(and a superuser) with a DRF token over every staff operation, nobody over the public
intake endpoints, and the connected app's and the ad account's own tokens over theirs.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field

import pytest
import schemathesis
from django.core.cache import cache
from django.core.handlers.wsgi import WSGIHandler
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token

from crm.roles import AUDITOR, BILLING_ADMIN, MARKETING_OPS, SALES
from tests.contract.seed import Seeded, seed_api_objects
from tests.factories import UserFactory

PUBLIC_PATHS = ("/api/intake/forms/", "/api/intake/external-forms/", "/api/intake/chatflows/")
APP_PATHS = ("/api/intake/integrations/", "/api/intake/ads/")
SEED = 20261203

# Every phase for the superuser and the token holders: the coverage phase's boundary and
# wrong-type values, then generated data. The roles repeat the generated data only (what
# changes for them is mostly which answers are 403).
ALL_PHASES = {"coverage": {"enabled": True}, "fuzzing": {"enabled": True}}
FUZZING_ONLY = {"coverage": {"enabled": False}, "fuzzing": {"enabled": True}}

# Requests sent, by identity and operation: the terminal summary reports them, and each
# identity's run must have called every operation it covers.
REQUESTS: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)


@dataclass
class Identity:
    """Who sends the requests: a staff user's token, a token holder's, or nobody."""

    name: str
    paths: str  # a regex of the paths it calls
    phases: dict
    max_examples: int
    token: str | None = None
    bearer: dict[str, str] = field(default_factory=dict)  # path prefix → token

    def headers(self, path: str) -> dict[str, str]:
        for prefix, token in self.bearer.items():
            if path.startswith(prefix):
                return {"Authorization": f"Bearer {token}"}
        return {"Authorization": f"Token {self.token}"} if self.token else {}


def _starting_with(prefixes) -> str:
    return "(" + "|".join(re.escape(prefix) for prefix in prefixes) + ")"


STAFF_PATHS = rf"^(?!{_starting_with((*PUBLIC_PATHS, *APP_PATHS))})"
STAFF = ["superuser", MARKETING_OPS, SALES, BILLING_ADMIN, AUDITOR]
IDENTITIES = [*STAFF, "anonymous", "intake apps"]


@pytest.fixture
def seeded(db, settings, tmp_path) -> Seeded:
    settings.MEDIA_ROOT = tmp_path / "media"
    cache.clear()  # the intake throttle counts in the cache
    return seed_api_objects(actor=UserFactory(username="seeder", is_superuser=True))


@pytest.fixture(params=IDENTITIES)
def identity(request, seeded) -> Identity:
    name = request.param
    if name == "anonymous":
        return Identity(name, "^" + _starting_with(PUBLIC_PATHS), ALL_PHASES, max_examples=25)
    if name == "intake apps":
        bearer = {
            "/api/intake/integrations/": seeded.app_token,
            "/api/intake/ads/": seeded.ad_token,
        }
        return Identity(
            name, "^" + _starting_with(APP_PATHS), ALL_PHASES, max_examples=25, bearer=bearer
        )
    if name == "superuser":
        user = UserFactory(username="root", is_superuser=True)
        phases, max_examples = ALL_PHASES, 5
    else:
        user = UserFactory(username=name.lower().replace(" ", "-"), groups=[name])
        phases, max_examples = FUZZING_ONLY, 5
    token = Token.objects.create(user=user).key
    return Identity(name, STAFF_PATHS, phases, max_examples, token=token)


@pytest.fixture
def api_schema(identity):
    raw = SchemaGenerator().get_schema(request=None, public=True)
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "deterministic": True,
                "max-examples": identity.max_examples,
                "database": "none",
            },
            "phases": identity.phases,
            "checks": {
                # A schema-valid request may still be refused with a 400 by rules a schema
                # cannot state: a reference to a row that does not exist, "ids or filter,
                # not both", a window or a half-life, a cursor the API did not make. Any
                # other answer still fails; a wrong type, an unknown enum value or a missing
                # field must be refused (negative_data_rejection).
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]
                },
            },
            # The operations this identity does not call are turned off.
            "operations": [{"exclude-path-regex": identity.paths, "enabled": False}],
        }
    )
    schema = schemathesis.openapi.from_dict(raw, config=config)
    schema.app = WSGIHandler()
    yield schema
    covered = {
        f"{method.upper()} {path}"
        for path, operations in raw["paths"].items()
        if re.match(identity.paths, path)
        for method in operations
    }
    missed = covered - set(REQUESTS[identity.name])
    assert not missed, f"{identity.name} never called {sorted(missed)}"


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    # schemathesis' pytest integration renames the running item through `_nodeid`, which
    # pytest 9 no longer has: give it the attribute it expects.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def pytest_terminal_summary(terminalreporter):
    if not REQUESTS:
        return
    terminalreporter.write_sep("-", "contract suite: requests per identity")
    for name, operations in REQUESTS.items():
        terminalreporter.write_line(
            f"{name}: {sum(operations.values())} requests over {len(operations)} operations"
        )
    total = sum(sum(operations.values()) for operations in REQUESTS.values())
    terminalreporter.write_line(f"total: {total}")
