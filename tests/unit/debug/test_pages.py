"""The /debug pages over a real Istiolite's state: proxies driven through the real protocol."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from google.protobuf import any_pb2, json_format

from istiolite import type_urls
from istiolite.debug import pages
from istiolite.http_server import HttpServer, Request, Response
from istiolite.networking.generator import generate
from istiolite.networking.resource import to_resource
from istiolite.push.context import PushContext
from istiolite.server import Istiolite
from istiolite.settings import Settings
from istiolite.xds.protocol import Nack, TypeState
from tests.support import mesh, objects
from tests.unit.debug import state as s
from tests.unit.debug.state import CDS, DETAILS, EDS, LDS, NODE_ID, OTHER_NODE_ID, RDS, REVIEWS


@pytest.fixture
def app(tmp_path: Path) -> Istiolite:
    return s.make_app(tmp_path)


def _call(app: Istiolite, path: str, query: dict[str, list[str]] | None = None) -> Response:
    """A page's handler run as the HTTP server runs it (no socket)."""
    handler = pages.debug_routes(s.status(app))[path]
    result = handler(Request(path, query or {}))
    assert inspect.isawaitable(result)
    return asyncio.run(result)  # type: ignore[arg-type]


def _get(app: Istiolite, path: str, query: dict[str, list[str]] | None = None) -> Any:
    response = _call(app, path, query)
    assert response.status == 200, response.body
    assert response.content_type == "application/json"
    return json.loads(response.body)


# -- sync status -----------------------------------------------------------------------------


def test_status_of_a_type_follows_its_last_response() -> None:
    state = TypeState(CDS)
    assert pages.sync_status(state) == pages.NOT_SENT
    state.nonce_sent, state.version_sent, state.sent_at = "n-1", "v1", 10.0
    assert pages.sync_status(state) == pages.STALE
    state.version_acked, state.acked_nonce, state.acked_at = "v1", "n-1", 10.5
    assert pages.sync_status(state) == pages.SYNCED
    # A newer response is out: stale until its ACK, although an older version was ACKed.
    state.nonce_sent, state.version_sent, state.sent_at = "n-2", "v2", 11.0
    assert pages.sync_status(state) == pages.STALE
    state.nack = Nack(nonce="n-2", rejected_version="v2", message="bad", at=11.2)
    assert pages.sync_status(state) == pages.ERROR
    # Once something newer is sent, the old rejection no longer describes what is pending.
    state.nonce_sent, state.version_sent, state.sent_at = "n-3", "v3", 12.0
    assert pages.sync_status(state) == pages.STALE


def test_syncz_shows_each_proxy_and_type(app: Istiolite) -> None:
    s.synced(app)
    body = _get(app, "/debug/syncz")
    assert len(body) == 1
    entry = body[0]
    assert entry["proxy"] == NODE_ID
    assert entry["name"] == "app-1.default"
    assert entry["delta"] is False
    assert entry["proxy_type"] == "sidecar"
    assert entry["connection"].startswith("conn-test-")
    assert entry["istiod"] == pages.instance_name()
    assert list(entry["types"]) == ["CDS", "EDS", "LDS", "RDS"]
    for short, type_url in (("CDS", CDS), ("EDS", EDS), ("LDS", LDS), ("RDS", RDS)):
        t = entry["types"][short]
        assert t["type_url"] == type_url
        assert t["status"] == "SYNCED", (short, t)
        assert t["sent_version"] and t["acked_version"] == t["sent_version"]
        assert t["sent_nonce"]
        assert t["nack"] is None
        assert t["sent_at"].endswith("Z") and t["acked_at"] >= t["sent_at"]
    assert entry["types"]["EDS"]["resources"] == 2
    assert entry["types"]["EDS"]["subscribed"] == 2
    assert entry["types"]["CDS"]["wildcard"] is True
    assert entry["types"]["CDS"]["resources"] == len(generate(app.ads.context, _proxy(app), CDS))


def _proxy(app: Istiolite) -> Any:
    conn = pages.find_connection(s.status(app), NODE_ID)
    assert conn is not None
    return conn.proxy


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_syncz_shows_a_nack_as_error_with_its_message(app: Istiolite, delta: bool) -> None:
    driver = s.connect(app, OTHER_NODE_ID, delta=delta)
    driver.subscribe(CDS)
    driver.ack(CDS)
    driver.subscribe(LDS)
    rejected = driver.state(LDS).version_sent
    driver.nack(LDS, "listener 0.0.0.0_9080: bad filter chain")
    driver.subscribe(EDS, [REVIEWS])  # sent, not answered yet
    [entry] = _get(app, "/debug/syncz")
    assert entry["name"] == "web-1.shop"
    assert entry["delta"] is delta
    lds = entry["types"]["LDS"]
    assert lds["status"] == "ERROR"
    assert lds["nack"]["message"] == "listener 0.0.0.0_9080: bad filter chain"
    assert lds["nack"]["rejected_version"] == rejected
    assert lds["nack"]["nonce"] == lds["sent_nonce"]
    assert lds["acked_version"] == ""
    assert entry["types"]["CDS"]["status"] == "SYNCED"
    assert entry["types"]["EDS"]["status"] == "STALE"


def test_syncz_lists_other_types_by_url_and_skips_streams_without_a_node(app: Istiolite) -> None:
    driver = s.connect(app)
    s.connect(app, "sidecar~10.0.0.9~quiet.default~default.svc.cluster.local")  # no request yet
    driver.subscribe(type_urls.NAME_TABLE)
    driver.conn.stream.types[RDS] = TypeState(RDS)  # subscribed, nothing sent
    [entry] = _get(app, "/debug/syncz")
    assert entry["types"][type_urls.NAME_TABLE]["status"] == "STALE"
    assert entry["types"]["RDS"]["status"] == "NOT_SENT"


def test_syncz_follows_a_push_until_acked(app: Istiolite) -> None:
    driver = s.synced(app)
    mesh.write(  # a new service: clusters change
        Path(app.settings.config_dirs[0]) / "ratings.yaml",
        objects.service("ratings", ports=[objects.service_port("http", 9082)]),
    )
    app.files.load_all()
    app.ads.update(PushContext(app.store.snapshot(), domain="cluster.local", version="test-2"))
    driver.push()
    [entry] = _get(app, "/debug/syncz")
    assert entry["types"]["CDS"]["status"] == "STALE"
    driver.ack(CDS)
    [entry] = _get(app, "/debug/syncz")
    assert entry["types"]["CDS"]["status"] == "SYNCED"


# -- config_dump -----------------------------------------------------------------------------


def _section(dump: dict[str, Any], field: str) -> list[dict[str, Any]]:
    for config in dump["configs"]:
        if field in config:
            return config[field]
    return []


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_config_dump_is_what_the_proxy_subscribed_to(app: Istiolite, delta: bool) -> None:
    driver = s.connect(app, delta=delta)
    driver.subscribe(CDS)
    driver.subscribe(EDS, [REVIEWS])
    driver.subscribe(LDS)
    dump = _get(app, "/debug/config_dump", {"proxyID": [NODE_ID]})
    assert [c["@type"].rsplit(".", 1)[-1] for c in dump["configs"]] == [
        "ClustersConfigDump",
        "EndpointsConfigDump",
        "ListenersConfigDump",
        "RoutesConfigDump",
    ]
    proxy = driver.conn.proxy
    assert proxy is not None
    clusters = [c["cluster"]["name"] for c in _section(dump, "dynamic_active_clusters")]
    assert clusters == list(generate(app.ads.context, proxy, CDS))
    assert {REVIEWS, DETAILS} <= set(clusters)
    endpoints = _section(dump, "dynamic_endpoint_configs")
    assert [e["endpoint_config"]["cluster_name"] for e in endpoints] == [REVIEWS]
    addresses = [
        lb["endpoint"]["address"]["socket_address"]
        for group in endpoints[0]["endpoint_config"]["endpoints"]
        for lb in group["lb_endpoints"]
    ]
    assert addresses == [{"address": "10.1.0.1", "port_value": 8080}]
    listeners = [item["name"] for item in _section(dump, "dynamic_listeners")]
    assert listeners == list(generate(app.ads.context, proxy, LDS))
    assert _section(dump, "dynamic_route_configs") == []  # RDS not subscribed yet


def test_config_dump_finds_a_proxy_by_pod_and_namespace(app: Istiolite) -> None:
    s.synced(app)
    s.synced(app, OTHER_NODE_ID)
    by_id = _get(app, "/debug/config_dump", {"proxyID": [OTHER_NODE_ID]})
    assert _get(app, "/debug/config_dump", {"proxyID": ["web-1.shop"]}) == by_id
    assert _get(app, "/debug/config_dump", {"proxyID": ["web-1"]}) == by_id
    assert _get(app, "/debug/config_dump", {"proxyID": ["app-1.default"]}) != by_id


def test_config_dump_errors(app: Istiolite) -> None:
    s.synced(app)
    missing = _call(app, "/debug/config_dump")
    assert missing.status == 400
    assert "proxyID" in json.loads(missing.body)["error"]
    unknown = _call(app, "/debug/config_dump", {"proxyID": ["nobody.default"]})
    assert unknown.status == 404
    assert "nobody.default" in json.loads(unknown.body)["error"]
    # Two proxies with the same pod name in different namespaces: the bare name is ambiguous.
    s.synced(app, "sidecar~10.0.0.3~app-1.shop~shop.svc.cluster.local")
    ambiguous = _call(app, "/debug/config_dump", {"proxyID": ["app-1"]})
    assert ambiguous.status == 400
    assert "several" in json.loads(ambiguous.body)["error"]


def test_the_newest_stream_of_a_proxy_wins(app: Istiolite) -> None:
    s.synced(app)
    newer = s.connect(app)
    newer.subscribe(CDS)
    conn = pages.find_connection(s.status(app), "app-1.default")
    assert conn is newer.conn


def _secret_resource() -> Any:
    secret = secret_pb2.Secret(
        name="default",
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string="-----BEGIN CERTIFICATE-----"),
            private_key=base_pb2.DataSource(inline_bytes=b"PRIVATE-KEY-BYTES"),
            password=base_pb2.DataSource(inline_string="hunter2"),
        ),
    )
    return to_resource("default", type_urls.SECRET, secret)


def test_secrets_are_shown_without_key_material() -> None:
    ticket = secret_pb2.Secret(
        name="tickets",
        session_ticket_keys=common_pb2.TlsSessionTicketKeys(
            keys=[base_pb2.DataSource(inline_bytes=b"TICKET-KEY")]
        ),
    )
    generic = secret_pb2.Secret(
        name="token",
        generic_secret=secret_pb2.GenericSecret(
            secret=base_pb2.DataSource(inline_string="TOKEN"),
            secrets={"extra": base_pb2.DataSource(inline_string="EXTRA")},
        ),
    )
    dump = pages.secrets_dump(
        {
            "default": _secret_resource(),
            "tickets": to_resource("tickets", type_urls.SECRET, ticket),
            "token": to_resource("token", type_urls.SECRET, generic),
        }
    )
    text = json_format.MessageToJson(dump, preserving_proto_field_name=True)
    for leaked in ("PRIVATE-KEY-BYTES", "hunter2", "TICKET-KEY", "TOKEN", "EXTRA"):
        assert leaked not in text
        assert base64.b64encode(leaked.encode()).decode() not in text
    body = json.loads(text)
    [default, tickets, token] = body["dynamic_active_secrets"]
    cert = default["secret"]["tls_certificate"]
    assert cert["private_key"] == {"inline_string": pages.REDACTED}
    assert cert["password"] == {"inline_string": pages.REDACTED}
    assert cert["certificate_chain"] == {"inline_string": "-----BEGIN CERTIFICATE-----"}
    assert tickets["secret"]["session_ticket_keys"]["keys"] == [{"inline_string": pages.REDACTED}]
    assert token["secret"]["generic_secret"] == {
        "secret": {"inline_string": pages.REDACTED},
        "secrets": {"extra": {"inline_string": pages.REDACTED}},
    }


def test_key_material_inlined_anywhere_is_scrubbed() -> None:
    tls = tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificates=[
                common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(inline_string="CERT"),
                    private_key=base_pb2.DataSource(inline_bytes=b"INLINE-KEY"),
                )
            ]
        ),
        session_ticket_keys=common_pb2.TlsSessionTicketKeys(
            keys=[base_pb2.DataSource(inline_bytes=b"TICKET")]
        ),
    )
    listener = listener_pb2.Listener(
        name="tls",
        filter_chains=[
            listener_components_pb2.FilterChain(
                transport_socket=base_pb2.TransportSocket(name="tls", typed_config=_packed(tls))
            )
        ],
    )
    text = json.dumps(
        pages.scrub(json_format.MessageToDict(listener, preserving_proto_field_name=True))
    )
    for leaked in (b"INLINE-KEY", b"TICKET"):
        assert base64.b64encode(leaked).decode() not in text
    context = json.loads(text)["filter_chains"][0]["transport_socket"]["typed_config"]
    [cert] = context["common_tls_context"]["tls_certificates"]
    assert cert == {
        "certificate_chain": {"inline_string": "CERT"},
        "private_key": {"inline_string": pages.REDACTED},
    }
    assert context["session_ticket_keys"] == {"keys": [{"inline_string": pages.REDACTED}]}


def test_config_dump_page_output_never_carries_a_key(app: Istiolite) -> None:
    dump = pages.proxy_config_dump(s.status(app), s.synced(app).conn)
    tls = tls_pb2.UpstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificates=[
                common_pb2.TlsCertificate(
                    private_key=base_pb2.DataSource(inline_string="CLUSTER-KEY")
                )
            ]
        )
    )
    cluster = cluster_pb2.Cluster(
        name="tls-cluster",
        transport_socket=base_pb2.TransportSocket(name="tls", typed_config=_packed(tls)),
    )
    section = config_dump_shared_pb2.ClustersConfigDump()
    section.dynamic_active_clusters.add(cluster=_packed(cluster))
    dump.configs.add().Pack(section)
    dump.configs.add().Pack(pages.secrets_dump({"default": _secret_resource()}))
    response = pages.config_dump_response(dump)
    assert response.status == 200
    text = response.body.decode() if isinstance(response.body, bytes) else response.body
    for leaked in ("CLUSTER-KEY", "PRIVATE-KEY-BYTES", "hunter2"):
        assert leaked not in text
        assert base64.b64encode(leaked.encode()).decode() not in text
    body = json.loads(text)
    assert _section(body, "dynamic_active_secrets")[0]["name"] == "default"
    clusters = [
        item["cluster"]["name"]
        for config in body["configs"]
        for item in config.get("dynamic_active_clusters", [])
    ]
    assert "tls-cluster" in clusters


def _packed(msg: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def test_config_dump_has_no_secret_section_while_nothing_is_served(app: Istiolite) -> None:
    driver = s.synced(app)
    driver.subscribe(type_urls.SECRET, ["default", "ROOTCA"])
    dump = _get(app, "/debug/config_dump", {"proxyID": [NODE_ID]})
    assert "SecretsConfigDump" not in json.dumps(dump)


# -- registryz, configz, push_status -----------------------------------------------------------


def test_registryz_lists_services_ports_and_ready_endpoints(app: Istiolite) -> None:
    body = _get(app, "/debug/registryz")
    assert [svc["hostname"] for svc in body] == [
        "details.default.svc.cluster.local",
        "reviews.default.svc.cluster.local",
    ]
    details, reviews = body
    assert reviews["clusterIP"] == "10.96.0.10"
    assert reviews["namespace"] == "default" and reviews["name"] == "reviews"
    assert reviews["ports"] == [
        {
            "name": "http",
            "port": 9080,
            "protocol": "HTTP",
            "targetPort": 8080,
            "endpoints": [
                {
                    "address": "10.1.0.1",  # 10.1.0.2 is not ready
                    "port": 8080,
                    "locality": {"region": "r1", "zone": "z1", "subZone": ""},
                    "pod": "default/reviews-1",
                    "serviceAccount": "bookinfo-reviews",
                }
            ],
        }
    ]
    assert details["ports"][0]["endpoints"] == []


def test_configz_lists_objects_with_sources_and_the_rejected_one(app: Istiolite) -> None:
    body = _get(app, "/debug/configz")
    config_dir = Path(app.settings.config_dirs[0]).resolve()
    listed = {(o["kind"], o["namespace"], o["name"]): o for o in body["objects"]}
    assert set(listed) == {
        ("EndpointSlice", "default", "reviews-slice"),
        ("Namespace", "", "shop"),
        ("Node", "", "n1"),
        ("Pod", "default", "reviews-1"),
        ("Service", "default", "details"),
        ("Service", "default", "reviews"),
    }
    reviews = listed[("Service", "default", "reviews")]
    assert Path(reviews["source"]).resolve() == config_dir / "reviews.yaml"
    assert reviews["sources"] == [reviews["source"]]
    assert body["loaded"] is True
    [error] = body["errors"]
    assert Path(error["file"]).resolve() == config_dir / "broken.yaml"
    assert error["object"] == "Service shop/broken"
    assert error["field"] == "spec.ports[0].port"
    assert error["message"] == s.BROKEN_MESSAGE
    assert isinstance(error["line"], int)


def test_configz_lists_objects_of_unsupported_kinds(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "filters.yaml").write_text(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
        "metadata: {name: mesh-default, namespace: istio-system}\nspec: {}\n"
    )
    app = Istiolite(Settings(config_dirs=[config]))
    app.files.load_all()
    body = _get(app, "/debug/configz")
    assert body["objects"] == [] and body["errors"] == []
    [entry] = body["unsupported"]
    assert Path(entry["file"]).resolve() == (config / "filters.yaml").resolve()
    assert (entry["object"], entry["kind"], entry["line"]) == (
        "Telemetry istio-system/mesh-default",
        "Telemetry",
        1,
    )
    assert entry["message"].startswith("not supported by istiolite: Telemetry")


def test_push_status_counts_connected_proxies(app: Istiolite) -> None:
    s.synced(app)
    s.connect(app, OTHER_NODE_ID)  # no request yet: a connection, not yet a proxy
    body = _get(app, "/debug/push_status")
    assert body["connected_proxies"] == 1
    assert body["connections"] == 2
    for key, value in s.status(app).push_status().items():
        if key not in ("connected_proxies", "connections"):
            assert body[key] == json.loads(json.dumps(value, default=str))
    assert body["version"]


# -- served over HTTP --------------------------------------------------------------------------


async def test_pages_are_served_over_http(app: Istiolite) -> None:
    s.synced(app)
    server = HttpServer(pages.debug_routes(s.status(app)))
    await server.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"

    def fetch(path: str) -> tuple[int, str, Any]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as resp:
                return resp.status, resp.headers["Content-Type"], json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, err.headers["Content-Type"], json.loads(err.read())

    try:
        for path in ("/debug/syncz", "/debug/registryz", "/debug/configz", "/debug/push_status"):
            status, content_type, _ = await asyncio.to_thread(fetch, path)
            assert (status, content_type) == (200, "application/json"), path
        status, _, dump = await asyncio.to_thread(fetch, "/debug/config_dump?proxyID=app-1.default")
        assert status == 200 and _section(dump, "dynamic_active_clusters")
        status, _, err = await asyncio.to_thread(fetch, "/debug/config_dump?proxyID=x.y")
        assert status == 404 and "x.y" in err["error"]
    finally:
        await server.stop()
