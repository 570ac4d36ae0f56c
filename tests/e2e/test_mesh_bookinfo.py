"""The whole mesh on one machine (istiolite.demo.mesh): bookinfo pods as network namespaces with
istio-init's interception, Envoy sidecars on the secure port with a service-account token each
(the local token issuer), istiolite's CA. One mesh for the module; each test leaves the config
as it found it.

What a user sees: calls between sidecars are mutual TLS carrying the caller's SPIFFE ID; STRICT
refuses a pod without a sidecar; a canary split, a fault and an AuthorizationPolicy act on live
traffic; pods leave and join under load without failed requests; istiolite restarts under load
without failed requests, and the sidecars converge to the same config and keep their keys.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509

from istiolite.demo.mesh import bookinfo
from istiolite.demo.mesh.cluster import Mesh, Pod, PodSpec
from istiolite.demo.mesh.load import Load, Result, burst
from istiolite.demo.mesh.netns import PROXY_GID, PROXY_UID
from tests.support.wait import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.e2e]

EXAMPLES = bookinfo.EXAMPLES  # the files the demo tells users to try
NS = bookinfo.NAMESPACE
PORT = bookinfo.PORT


def uri(service_account: str) -> str:
    return f"spiffe://cluster.local/ns/{NS}/sa/{service_account}"


def host(service: str) -> str:
    return f"{service}.{NS}.svc.cluster.local"


def outbound(service: str) -> str:
    return f"outbound|{PORT}||{host(service)}"


@pytest.fixture(scope="module")
def mesh(bookinfo_mesh: Mesh) -> Mesh:
    return bookinfo_mesh


def failures(results: list[Result]) -> str:
    """The calls that did not answer 200 and why (the first 20), for an assertion message."""
    failed = [f"call {i}: {r}" for i, r in enumerate(results) if r.status != 200]
    return "\n".join(failed[:20] + ([f"... {len(failed) - 20} more"] if len(failed) > 20 else []))


def call(m: Mesh, pod: str, service: str, *, by: str = "name") -> Any:
    """A request by the app's user in `pod` to `service`: by name (Host header, ClusterIP
    routed by the sidecar) or by ClusterIP alone."""
    vip = m.cluster_ip(service)
    return m.pods[pod].http(vip, PORT, host(service) if by == "name" else None)


def _xfcc_uri(xfcc: str) -> str:
    return next((p[4:] for p in xfcc.split(";") if p.startswith("URI=")), "")


def _delta(before: Counter[str], after: Counter[str], name: str) -> int:
    return after[name] - before[name]


def test_pods_are_network_namespaces_with_istio_init_interception(mesh: Mesh) -> None:
    for pod in mesh.pods.values():
        assert pod.ns.path.exists()
        assert f"inet {pod.ip}/24" in pod.ns.ip("addr", "show", "dev", "eth0")
        hosts = (pod.ns.etc / "hosts").read_text()
        assert f"{mesh.cluster_ip('ratings')}\tratings ratings.{NS}" in hosts
        rules = pod.ns.iptables_save() if pod.spec.sidecar else ""
        if pod.envoy is not None:
            assert "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in rules
            assert "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in rules
            assert "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN" in rules
            status = dict(
                line.split(":", 1)
                for line in open(f"/proc/{pod.envoy.proc.pid}/status").read().splitlines()
            )
            uid, gid = int(status["Uid"].split()[1]), int(status["Gid"].split()[1])
            assert gid == PROXY_GID and uid in (PROXY_UID, 0)
    # The pod without a sidecar has no interception at all.
    assert mesh.pods["legacy"].envoy is None
    assert "ISTIO" not in mesh.pods["legacy"].ns.run("iptables-save", "-t", "nat")


def test_calls_are_mutual_tls_with_the_callers_spiffe_ids(mesh: Mesh) -> None:
    sleep, productpage = mesh.pods["sleep"], mesh.pods["productpage-v1"]
    before_client, before_server = sleep.stats(), productpage.stats()
    for by in ("name", "cluster-ip"):
        reply = call(mesh, "sleep", "productpage", by=by)
        assert reply.status == 200, reply.body
        page = reply.json()
        assert page["pod"] == "productpage-v1"
        # productpage saw the caller's identity, vouched for by its sidecar over mTLS.
        assert _xfcc_uri(page["xfcc"]) == uri("sleep"), page["xfcc"]
        assert f"By={uri('bookinfo-productpage')}" in page["xfcc"]
        # ... and the next hops, called by service name from productpage, saw productpage.
        for hop in page["calls"]:
            assert hop["status"] == 200, hop
            assert _xfcc_uri(hop["answer"]["xfcc"]) == uri("bookinfo-productpage")
    after_client, after_server = sleep.stats(), productpage.stats()
    # Both sidecars carried both requests, the hop between them over TLS.
    assert (
        _delta(before_client, after_client, f"cluster.{outbound('productpage')}.upstream_rq_total")
        == 2
    )
    assert (
        _delta(before_client, after_client, f"cluster.{outbound('productpage')}.ssl.handshake") >= 1
    )
    assert _delta(before_server, after_server, "cluster.inbound|9080||.upstream_rq_total") == 2
    assert _delta(before_server, after_server, "listener.0.0.0.0_15006.ssl.handshake") >= 1
    # reviews v2/v3 call ratings: ratings sees reviews' identity.
    seen: dict[str, str] = {}

    def a_reviews_call_reached_ratings() -> bool:
        answer = call(mesh, "sleep", "reviews").json()
        for hop in answer["calls"]:
            seen[answer["pod"]] = _xfcc_uri(hop["answer"]["xfcc"])
        return bool(seen)

    wait_for(a_reviews_call_reached_ratings, timeout=20, what="reviews v2/v3 calling ratings")
    assert set(seen.values()) == {uri("bookinfo-reviews")}


def test_each_sidecar_holds_its_own_identity_chained_to_the_mesh_root(mesh: Mesh) -> None:
    """The `default` secret each Envoy got over SDS: its own SPIFFE ID, signed by the root in
    istiolite's CA directory."""
    root = x509.load_pem_x509_certificate((mesh.ca_dir / "root-cert.pem").read_bytes())
    for pod in mesh.pods.values():
        if pod.envoy is None:
            continue
        secrets = {
            c["secret"]["name"]: c["secret"]
            for c in pod.config_dump("dynamic_active_secrets")
            if "secret" in c
        }
        inline = secrets["default"]["tls_certificate"]["certificate_chain"]["inline_bytes"]
        chain = x509.load_pem_x509_certificates(base64.b64decode(inline))
        san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [pod.spec.spiffe_id]
        for cert, issuer in zip(chain, [*chain[1:], root], strict=True):
            cert.verify_directly_issued_by(issuer)
        # The key is there (Envoy's admin shows it redacted, never the key).
        key = secrets["default"]["tls_certificate"]["private_key"]["inline_bytes"]
        assert base64.b64decode(key) == b"[redacted]"


def test_strict_peer_authentication_refuses_a_pod_without_sidecar(mesh: Mesh) -> None:
    legacy = mesh.pods["legacy"]
    target = mesh.pods["ratings-v1"].ip

    def plaintext() -> int:
        try:
            return legacy.http(target, PORT).status
        except OSError:
            return 0

    assert plaintext() == 200  # PERMISSIVE (no policy): plaintext accepted
    mesh.copy_in(EXAMPLES / "strict-mtls.yaml")
    try:
        wait_for(lambda: plaintext() == 0, timeout=30, what="plaintext refused under STRICT")
        for _ in range(5):
            assert plaintext() == 0
            assert call(mesh, "sleep", "ratings").status == 200  # the mesh client still works
    finally:
        mesh.delete("strict-mtls.yaml")
    wait_for(lambda: plaintext() == 200, timeout=30, what="plaintext accepted again")


def test_canary_90_10_over_1000_calls(mesh: Mesh) -> None:
    mesh.copy_in(EXAMPLES / "reviews-canary.yaml")
    sleep, vip = mesh.pods["sleep"], mesh.cluster_ip("reviews")
    try:
        wait_for(
            lambda: all(
                r.answered_by != "reviews-v3" for r in burst(sleep, vip, PORT, "reviews", 60)
            ),
            timeout=30,
            what="the canary split in force (no reviews-v3)",
        )
        results = burst(sleep, vip, PORT, "reviews", 1000)
    finally:
        mesh.delete("reviews-canary.yaml")
    assert Counter(r.status for r in results) == {200: 1000}, failures(results)
    versions = Counter(r.answered_by for r in results)
    assert set(versions) <= {"reviews-v1", "reviews-v2"}, versions
    share = versions["reviews-v2"] / 10  # percent
    assert 7 <= share <= 13, versions


def test_fault_injection_shows_in_the_callers_responses(mesh: Mesh) -> None:
    mesh.copy_in(EXAMPLES / "ratings-fault.yaml")
    try:
        wait_for(lambda: call(mesh, "sleep", "ratings").status == 503, timeout=30, what="fault")
        reply = call(mesh, "sleep", "ratings")
        assert (reply.status, reply.body) == (503, "fault filter abort")
        # reviews v2 calls ratings: its page (asked for on the pod itself) reports the
        # injected failure of that hop.
        answer = mesh.pods["reviews-v2"].http(mesh.pods["reviews-v2"].ip, PORT).json()
        assert [(h["target"], h["status"]) for h in answer["calls"]] == [(f"ratings:{PORT}", 503)]
    finally:
        mesh.delete("ratings-fault.yaml")
    wait_for(lambda: call(mesh, "sleep", "ratings").status == 200, timeout=30, what="no fault")


def test_authorization_policy_allows_one_caller_and_denies_another(mesh: Mesh) -> None:
    mesh.copy_in(EXAMPLES / "ratings-authz.yaml")
    reviews = mesh.pods["reviews-v2"]
    try:
        wait_for(lambda: call(mesh, "sleep", "ratings").status == 403, timeout=30, what="deny")
        denied = call(mesh, "sleep", "ratings")
        assert (denied.status, denied.body) == (403, "RBAC: access denied")
        allowed = reviews.http(mesh.cluster_ip("ratings"), PORT, host("ratings"))
        assert allowed.status == 200 and allowed.json()["pod"] == "ratings-v1"
    finally:
        mesh.delete("ratings-authz.yaml")
    wait_for(lambda: call(mesh, "sleep", "ratings").status == 200, timeout=30, what="allowed")


@pytest.mark.parametrize("crash", [False, True], ids=["deleted", "killed"])
def test_pods_leave_and_join_under_load(mesh: Mesh, crash: bool) -> None:
    """A pod deleted (endpoint first, then its processes) or killed outright (processes first):
    once its endpoint has left every caller's config, no request fails; a new pod joins and
    takes traffic."""
    sleep, productpage = mesh.pods["sleep"], mesh.pods["productpage-v1"]
    victim = next(p for p in mesh.pods.values() if p.spec.service == "reviews")
    newcomer = PodSpec(f"reviews-new-{int(crash)}", "reviews", "bookinfo-reviews", "v3",
                       calls=(f"ratings:{PORT}",))  # fmt: skip
    with Load(sleep, mesh.cluster_ip("reviews"), PORT, "reviews") as load:
        wait_for(lambda: any(r.answered_by == victim.name for r in load.results), timeout=20,
                 what=f"{victim.name} serving")  # fmt: skip
        mesh.remove_pod(victim.name, callers=[sleep, productpage], crash=crash)
        assert not victim.ns.path.exists()
        removed_at = time.monotonic()
        wait_for(lambda: len(load.since(removed_at)) >= 200, timeout=30, what="traffic after")
        joined = mesh.add_pod(newcomer)
        joined_at = time.monotonic()
        wait_for(lambda: any(r.answered_by == joined.name for r in load.since(joined_at)),
                 timeout=30, what="the new pod answering")  # fmt: skip
        wait_for(lambda: len(load.since(joined_at)) >= 200, timeout=30, what="traffic after")
    after_removal = load.since(removed_at)
    assert Counter(r.status for r in after_removal) == {200: len(after_removal)}, failures(
        after_removal
    )
    assert victim.name not in {r.answered_by for r in after_removal}
    if not crash:  # deleted the Kubernetes way: not one request failed at all
        assert Counter(r.status for r in load.results) == {200: len(load.results)}, failures(
            load.results
        )
    for caller in (sleep, productpage):
        assert joined.ip in caller.endpoints(outbound("reviews"))
        assert victim.ip not in caller.endpoints(outbound("reviews"))


def _normalized(value: Any) -> Any:
    """A config dump without what changes on every push (versions, timestamps)."""
    if isinstance(value, dict):
        return {
            k: _normalized(v) for k, v in value.items() if k not in ("version_info", "last_updated")
        }
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    return value


def _config(pod: Pod) -> dict[str, Any]:
    return {
        resource: sorted((_normalized(c) for c in pod.config_dump(resource)), key=lambda c: repr(c))
        for resource in ("dynamic_active_clusters", "dynamic_listeners", "dynamic_route_configs")
    }


def test_istiolite_restart_under_load(mesh: Mesh) -> None:
    watched = [mesh.pods[name] for name in ("sleep", "productpage-v1", "ratings-v1")]
    configs = {p.name: _config(p) for p in watched}
    certificates = {p.name: p.certificate_serials() for p in watched}
    sleep = mesh.pods["sleep"]
    with Load(sleep, mesh.cluster_ip("productpage"), PORT, "productpage") as load:
        wait_for(lambda: len(load.results) >= 20, timeout=20, what="traffic before")
        mesh.stop_istiolite()
        down_at = time.monotonic()
        wait_for(lambda: len(load.since(down_at)) >= 50, timeout=30, what="traffic while down")
        for p in watched:  # they noticed
            assert p.stats()["control_plane.connected_state"] == 0
        mesh.start_istiolite()
        for p in watched:
            wait_for(lambda p=p: p.stats()["control_plane.connected_state"] == 1, timeout=30,
                     what=f"{p.name} reconnected")  # fmt: skip
            wait_for(lambda p=p: _config(p) == configs[p.name], timeout=30,
                     what=f"{p.name} converged to the same config")  # fmt: skip
        back_at = time.monotonic()
        wait_for(lambda: len(load.since(back_at)) >= 50, timeout=30, what="traffic after")
    assert Counter(r.status for r in load.results) == {200: len(load.results)}, failures(
        load.results
    )
    for p in watched:
        assert p.certificate_serials() == certificates[p.name], p.name


@pytest.fixture(scope="module", autouse=True)
def _no_leftover_config(bookinfo_mesh: Mesh) -> Iterator[None]:
    yield
    assert sorted(f.name for f in bookinfo_mesh.config_dir.iterdir()) == ["mesh.yaml"]
