"""Public intake throttles: no header widens them, and every process shares the count."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from django.conf import settings
from django.core.cache import caches
from django.test import Client, RequestFactory, override_settings
from rest_framework.test import APIClient

from contacts.intake.api.auth import PUBLIC_SCOPE, IntakeThrottle  # noqa
from contacts.models import Contact
from crm.settings.base import BASE_DIR
from crm.throttling import client_address

EXTERNAL = "/api/intake/external-forms/"
REDIS_URL = "redis://127.0.0.1:6379/7"


def redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def throttled(rate="5/minute", num_proxies=None, caches_setting=None):
    """The project's settings with a small rate (and, if given, a number of trusted proxies)."""
    rest = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {PUBLIC_SCOPE: rate, "intake_apps": "1000/minute"},
    }
    if num_proxies is not None:
        rest["NUM_PROXIES"] = num_proxies
    overrides = {"REST_FRAMEWORK": rest}
    if caches_setting is not None:
        overrides["CACHES"] = caches_setting
    return override_settings(**overrides)


@pytest.fixture(autouse=True)
def _fresh_counts():
    caches["default"].clear()
    yield
    caches["default"].clear()


def submit(client, i, **headers):
    body = {"form_id": "site", "fields": {"email": f"x{i}@example.com"}}
    return client.post(EXTERNAL, body, format="json", **headers).status_code


def test_a_forged_forwarded_for_header_does_not_widen_the_throttle(account):
    client = APIClient()

    with throttled("5/minute"):
        codes = [submit(client, i, HTTP_X_FORWARDED_FOR=f"10.9.{i}.1") for i in range(20)]

    assert codes == [201] * 5 + [429] * 15
    assert Contact.objects.count() == 5


def test_the_hosted_form_page_ignores_the_header_too(account):
    from contacts.intake.models import Form
    from contacts.intake.services import form_save

    form_save(form=Form(name="News", slug="news", fields=[{"name": "first_name"}]))
    client = Client()

    with throttled("2/minute"):
        codes = [
            client.post(
                "/forms/news/",
                {"email": f"h{i}@example.com", "first_name": "H"},
                HTTP_X_FORWARDED_FOR=f"10.8.{i}.1",
            ).status_code
            for i in range(4)
        ]

    assert codes == [302, 302, 429, 429]
    assert Contact.objects.count() == 2


def test_behind_a_trusted_proxy_each_client_has_its_own_allowance(account):
    client = APIClient()
    behind_proxy = {"REMOTE_ADDR": "192.0.2.10"}

    with throttled("2/minute", num_proxies=1):
        first = [
            submit(client, i, HTTP_X_FORWARDED_FOR="203.0.113.1", **behind_proxy) for i in range(3)
        ]
        second = [
            submit(client, 10 + i, HTTP_X_FORWARDED_FOR="203.0.113.2", **behind_proxy)
            for i in range(3)
        ]
        # What the client wrote before the proxy's own entry is not its identity.
        forged = [
            submit(
                client, 20 + i, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}, 203.0.113.1", **behind_proxy
            )
            for i in range(2)
        ]

    assert (first, second, forged) == ([201, 201, 429], [201, 201, 429], [429, 429])


def test_the_client_address_comes_from_the_socket_unless_proxies_are_trusted():
    request = RequestFactory().get(
        "/", REMOTE_ADDR="192.0.2.10", HTTP_X_FORWARDED_FOR="1.1.1.1, 2.2.2.2"
    )

    with throttled(num_proxies=0):
        direct = client_address(request)
    with throttled(num_proxies=1):
        one = client_address(request)
    with throttled(num_proxies=2):
        two = client_address(request)
    with throttled(num_proxies=5):
        more_than_hops = client_address(request)

    assert (direct, one, two, more_than_hops) == ("192.0.2.10", "2.2.2.2", "1.1.1.1", "1.1.1.1")


class _PublicView:
    throttle_scope = PUBLIC_SCOPE


def allowed_in_threads(requests: int, threads: int) -> int:
    started = time.time()

    class OneWindow(IntakeThrottle):
        # The whole burst in one window: a burst that straddled a window's end would rightly
        # be allowed the rate in each window.
        def timer(self):
            return started

    def one(_):
        request = RequestFactory().post(EXTERNAL, REMOTE_ADDR="192.0.2.77")
        return OneWindow().allow_request(request, _PublicView)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return sum(pool.map(one, range(requests)))


SHARED_CACHES = [
    pytest.param(
        {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}, id="memory"
    ),
    pytest.param(
        {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": REDIS_URL,
            }
        },
        id="redis",
        marks=pytest.mark.skipif(not redis_up(), reason="Redis is not running on 127.0.0.1"),
    ),
]


@pytest.mark.parametrize("caches_setting", SHARED_CACHES)
def test_simultaneous_requests_never_pass_more_than_the_rate(caches_setting):
    with throttled("50/minute", caches_setting=caches_setting):
        caches["default"].clear()
        allowed = allowed_in_threads(requests=160, threads=16)
        caches["default"].clear()

    assert allowed == 50


def cache_for(backend: str, tmp_path) -> tuple[dict, dict]:
    """The CACHES setting and the environment that make a new process use the same cache."""
    if backend == "redis":
        return (
            {
                "default": {
                    "BACKEND": "django.core.cache.backends.redis.RedisCache",
                    "LOCATION": REDIS_URL,
                }
            },
            {"CACHE_URL": REDIS_URL},
        )
    location = str(tmp_path / "cache")
    return (
        {
            "default": {
                "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": location,
            }
        },
        {"CACHE_DIR": location},
    )


CHILD = textwrap.dedent(
    """
    import django, sys
    django.setup()
    from django.test import RequestFactory
    from contacts.intake.api.auth import PUBLIC_SCOPE, IntakeThrottle

    class View:
        throttle_scope = PUBLIC_SCOPE

    request = RequestFactory().post("/", REMOTE_ADDR="127.0.0.1")
    throttle = IntakeThrottle()
    allowed = sum(throttle.allow_request(request, View) for _ in range(int(sys.argv[1])))
    print(allowed, throttle.now)
    """
)


@pytest.mark.parametrize(
    "backend",
    [
        "file",
        pytest.param("redis", marks=pytest.mark.skipif(not redis_up(), reason="no Redis")),
    ],
)
def test_another_process_draws_from_the_same_allowance(account, backend, tmp_path, monkeypatch):
    caches_setting, child_env = cache_for(backend, tmp_path)
    env = {
        **os.environ,
        **child_env,
        "DJANGO_SETTINGS_MODULE": "crm.settings.local",
        "INTAKE_THROTTLE": "5/minute",
        "DATABASE_URL": "",
    }
    env.pop("DATABASE_URL")

    with throttled("5/minute", caches_setting=caches_setting):
        caches["default"].clear()
        child = subprocess.run(
            [sys.executable, "-c", CHILD, "3"],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        allowed, child_now = child.stdout.split()
        # This process counts in the window the child counted in, even if the child's
        # window has just ended on the wall clock.
        monkeypatch.setattr(IntakeThrottle, "timer", staticmethod(lambda: float(child_now)))
        codes = [submit(APIClient(), i) for i in range(4)]
        caches["default"].clear()

    assert allowed == "3"
    assert codes == [201, 201, 429, 429]
