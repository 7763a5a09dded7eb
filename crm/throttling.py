"""Rate limits that hold across processes and cannot be widened by a request header.

* The client is the socket's address (`REMOTE_ADDR`). `X-Forwarded-For` is read only when
  settings say how many trusted proxies sit in front of the app (`NUM_PROXIES`, 0 by
  default): then the address the outermost trusted proxy saw is the client, and whatever
  a client wrote into the header before that is ignored.
* The count lives in the shared cache (Redis in production, a file cache in the embedded
  default), so every worker process and thread draws from the same allowance.
* Each scope counts requests in fixed windows with the cache's `add` and `incr`, which
  are atomic on Redis: concurrent requests cannot each read the same history and all
  pass, as they can with a read-then-write list of timestamps.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle


def client_address(request) -> str:
    """The client's address, trusting `X-Forwarded-For` only as far as `NUM_PROXIES` says."""
    remote_addr = request.META.get("REMOTE_ADDR", "")
    num_proxies = api_settings.NUM_PROXIES or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if num_proxies <= 0 or not forwarded:
        return remote_addr
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    if not hops:
        return remote_addr
    # Each trusted proxy appended the address it saw; the outermost one's entry is the
    # client, and anything to its left was written by the client itself.
    return hops[-min(num_proxies, len(hops))]


class ScopedCounterThrottle(ScopedRateThrottle):
    """A scoped rate (`"60/minute"`) counted per fixed window in the shared cache.

    The rate is read at each request, so `override_settings` and a changed environment
    apply without a restart.
    """

    def get_rate(self):
        rates = api_settings.DEFAULT_THROTTLE_RATES or {}
        if self.scope not in rates:
            raise ImproperlyConfigured(f"No throttle rate for the scope {self.scope!r}.")
        return rates[self.scope]

    def get_ident(self, request):
        return client_address(request)

    def allow_request(self, request, view):
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        self.now = self.timer()
        window = int(self.now // self.duration)
        self.window_ends = (window + 1) * self.duration
        counter = f"{key}:{window}"
        # `add` creates the window's counter only if it is missing (SET NX on Redis).
        self.cache.add(counter, 0, self.duration + 1)
        try:
            count = self.cache.incr(counter)
        except ValueError:
            # The counter expired between add and incr: this request opens a new one.
            self.cache.add(counter, 1, self.duration + 1)
            count = 1
        return count <= self.num_requests

    def wait(self):
        return max(0.0, self.window_ends - self.timer())
