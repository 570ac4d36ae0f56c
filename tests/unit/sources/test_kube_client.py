"""The Kubernetes adapter against the test API server, both through kubernetes_asyncio."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from istiolite.sources.kube.client import KubeClient, KubeConfigError
from tests.support.kube_apiserver import TOKEN_REVIEW_PATH, KubeApiServer


@pytest.fixture
def apiserver() -> Iterator[KubeApiServer]:
    with KubeApiServer() as server:
        yield server


async def _connect(apiserver: KubeApiServer, tmp_path: Path, **kw: str) -> KubeClient:
    kube = await KubeClient.connect(apiserver.write_kubeconfig(tmp_path / "kubeconfig", **kw))
    assert kube is not None
    return kube


async def test_token_review_of_a_service_account_token(
    apiserver: KubeApiServer, tmp_path: Path
) -> None:
    token = apiserver.add_token("shop", "reviews")
    kube = await _connect(apiserver, tmp_path)
    try:
        result = await kube.review_token(token, ["istio-ca"])
    finally:
        await kube.close()
    assert result.authenticated and not result.error
    assert result.username == "system:serviceaccount:shop:reviews"
    assert "system:serviceaccounts" in result.groups
    assert result.audiences == ("istio-ca",)
    (sent,) = apiserver.reviews()
    assert sent.body["spec"] == {"token": token, "audiences": ["istio-ca"]}
    assert sent.headers["Authorization"] == f"Bearer {apiserver.client_token}"


async def test_failed_review_carries_only_an_error(
    apiserver: KubeApiServer, tmp_path: Path
) -> None:
    other_audience = apiserver.add_token("shop", "reviews", audiences=("vault",))
    kube = await _connect(apiserver, tmp_path)
    try:
        unknown = await kube.review_token("sa.not-a-token", ["istio-ca"])
        wrong = await kube.review_token(other_audience, ["istio-ca"])
    finally:
        await kube.close()
    assert not unknown.authenticated and "invalid bearer token" in unknown.error
    assert not wrong.authenticated and "target audiences ['istio-ca']" in wrong.error


async def test_wrong_client_credential_is_401(apiserver: KubeApiServer, tmp_path: Path) -> None:
    token = apiserver.add_token("shop", "reviews")
    kube = await _connect(apiserver, tmp_path, token="not-the-credential")
    try:
        with pytest.raises(ValueError, match="HTTP 401 Unauthorized"):
            await kube.review_token(token, ["istio-ca"])
    finally:
        await kube.close()


async def test_server_verified_with_the_kubeconfig_ca(
    apiserver: KubeApiServer, tmp_path: Path
) -> None:
    """A kubeconfig whose CA did not sign the server's certificate: the call fails."""
    other = KubeApiServer()  # never started: only its CA is used
    path = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    text = path.read_text().replace(
        __import__("base64").b64encode(apiserver.ca_pem).decode(),
        __import__("base64").b64encode(other.ca_pem).decode(),
    )
    path.write_text(text)
    kube = await KubeClient.connect(path)
    assert kube is not None
    try:
        with pytest.raises(OSError):
            await kube.review_token("sa.x", ["istio-ca"])
    finally:
        await kube.close()
    assert apiserver.reviews() == []


async def test_strict_like_a_real_api_server(apiserver: KubeApiServer, tmp_path: Path) -> None:
    """Through the generated kubernetes_asyncio API: a well-formed TokenReview works, a wrong
    kind, apiVersion or content type is refused."""
    token = apiserver.add_token("shop", "reviews")
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(apiserver.write_kubeconfig(tmp_path / "kubeconfig")),
        client_configuration=configuration,
        persist_config=False,
    )
    async with client.ApiClient(configuration) as api:
        auth = client.AuthenticationV1Api(api)
        review = await auth.create_token_review(
            client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=["istio-ca"]))
        )
        assert review.status.authenticated
        assert review.status.user.username == "system:serviceaccount:shop:reviews"

        for body, content_type, code in [
            ({"apiVersion": "v1", "kind": "TokenReview", "spec": {"token": token}}, None, 400),
            ({"apiVersion": "authentication.k8s.io/v1", "kind": "Pod"}, None, 400),
            ({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview"}, None, 422),
            (json.dumps({}).encode(), "text/plain", 415),
        ]:
            headers = {"Content-Type": content_type} if content_type else {}
            with pytest.raises(client.ApiException) as err:
                await api.call_api(
                    TOKEN_REVIEW_PATH,
                    "POST",
                    header_params=headers,
                    body=body,
                    auth_settings=["BearerToken"],
                    response_types_map={201: "V1TokenReview"},
                )
            assert err.value.status == code
        with pytest.raises(client.ApiException) as err:  # a kind no CRD installed
            await client.CustomObjectsApi(api).list_namespaced_custom_object(
                "example.io", "v1", "default", "widgets"
            )
        assert err.value.status == 404


async def test_no_kubeconfig_outside_a_cluster_is_no_client(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert await KubeClient.connect(None) is None
    with pytest.raises(KubeConfigError, match="no such file"):
        await KubeClient.connect(tmp_path / "missing")
    (tmp_path / "broken").write_text("clusters: [")
    with pytest.raises(KubeConfigError, match=str(tmp_path / "broken")):
        await KubeClient.connect(tmp_path / "broken")
