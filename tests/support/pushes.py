"""What a change needs, decided as the live server decides it: a generator serves some proxies
over the old config, then the cache advances to the new one and the Pusher reads the decision
off what was dropped."""

from __future__ import annotations

from collections.abc import Sequence

from istiolite import type_urls
from istiolite.model.proxy import Proxy, parse_proxy
from istiolite.networking.generator import ConfigGenerator
from istiolite.push.context import PushContext
from istiolite.push.dependencies import changed_deps
from istiolite.push.pusher import decide
from istiolite.push.request import PushRequest
from tests.support.objects import DOMAIN, Raw, parse


def sidecar_proxy(pod: str = "client", namespace: str = "default", ip: str = "10.9.9.9") -> Proxy:
    return parse_proxy(f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.{DOMAIN}", {})


def push_for(
    before: Sequence[Raw], after: Sequence[Raw], proxies: Sequence[Proxy] = ()
) -> PushRequest:
    """The PushRequest the change from `before` to `after` makes, with `proxies` (default: one
    sidecar in `default`) connected and served every type beforehand."""
    old, new = parse(*before), parse(*after)
    keys = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    generator = ConfigGenerator()
    old_ctx = PushContext(old, domain=DOMAIN, version="before")
    for proxy in proxies or [sidecar_proxy()]:
        for type_url in type_urls.PUSH_ORDER:
            generator(old_ctx, proxy, type_url)
    new_ctx = PushContext(new, domain=DOMAIN, version="after")
    return decide(keys, generator.cache.advance(old_ctx, new_ctx, changed_deps(keys, old, new)))
