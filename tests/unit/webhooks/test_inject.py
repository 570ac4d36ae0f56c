"""/inject: the JSONPatch applied as the API server would gives Istio's injected pod shape,
valid as a Pod; opted-out, unlabelled and already-injected pods get no patch."""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest

from istiolite.webhooks.admission import parse_review
from istiolite.webhooks.inject import inject_review
from istiolite.webhooks.sidecar_template import InjectionConfig
from tests.support.admission import apply_patch, body, deployment_pod, patch_of, review

ENABLED = {
    "apps": {"istio-injection": "enabled"},
    "plain": {},
    "off": {"istio-injection": "disabled"},
}
CONFIG = InjectionConfig(proxy_image="docker.io/istio/proxyv2:1.24.3")


def _labels(namespace: str) -> dict[str, str] | None:
    return ENABLED.get(namespace)


def _inject(
    pod: dict[str, Any], namespace: str = "apps", config: InjectionConfig = CONFIG
) -> list[dict[str, Any]] | None:
    pod = copy.deepcopy(pod)
    return patch_of(
        inject_review(parse_review(body(review(pod, namespace=namespace))), config, _labels)
    )


def _injected(
    pod: dict[str, Any], namespace: str = "apps", config: InjectionConfig = CONFIG
) -> dict[str, Any]:
    patch = _inject(pod, namespace, config)
    assert patch is not None, "expected a patch"
    return apply_patch(copy.deepcopy(pod), patch)


def _valid_pod(pod: dict[str, Any]) -> None:
    # The Kubernetes OpenAPI schema of Pod, strict: an unknown or mistyped field fails.
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_injected_pod_has_istios_sidecar_shape() -> None:
    pod = _injected(deployment_pod())
    _valid_pod(pod)
    spec, meta = pod["spec"], pod["metadata"]
    assert [c["name"] for c in spec["containers"]] == ["hello", "istio-proxy"]
    assert [c["name"] for c in spec["initContainers"]] == ["istio-init"]
    proxy = spec["containers"][1]
    assert proxy["image"] == "docker.io/istio/proxyv2:1.24.3"
    assert proxy["args"][:4] == [
        "proxy",
        "sidecar",
        "--domain",
        "$(POD_NAMESPACE).svc.cluster.local",
    ]
    env = _env(proxy)
    assert env["CA_ADDR"] == "istiod.istio-system.svc:15012"
    assert env["PILOT_CERT_PROVIDER"] == "istiod"
    assert env["ISTIO_META_CLUSTER_ID"] == "Kubernetes"
    assert env["ISTIO_META_WORKLOAD_NAME"] == "hello-v1"
    assert (
        env["ISTIO_META_OWNER"] == "kubernetes://apis/apps/v1/namespaces/apps/deployments/hello-v1"
    )
    assert env["ISTIO_META_APP_CONTAINERS"] == "hello"
    assert json.loads(env["ISTIO_META_POD_PORTS"]) == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    ]
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert proxy["securityContext"]["runAsUser"] == 1337
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}
    mounts = {m["name"]: m["mountPath"] for m in proxy["volumeMounts"]}
    assert mounts["istio-token"] == "/var/run/secrets/tokens"
    assert mounts["istiod-ca-cert"] == "/var/run/secrets/istio"
    assert mounts["istio-podinfo"] == "/etc/istio/pod"
    volumes = {v["name"]: v for v in spec["volumes"]}
    token = volumes["istio-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"path": "istio-token", "expirationSeconds": 43200, "audience": "istio-ca"}
    assert volumes["istiod-ca-cert"]["configMap"] == {"name": "istio-ca-root-cert"}
    paths = {i["path"] for i in volumes["istio-podinfo"]["downwardAPI"]["items"]}
    assert paths == {"labels", "annotations"}
    init = spec["initContainers"][0]
    assert init["args"][0] == "istio-iptables"
    assert set(init["securityContext"]["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW"}
    assert meta["labels"]["security.istio.io/tlsMode"] == "istio"
    assert meta["labels"]["service.istio.io/canonical-name"] == "hello"
    assert meta["labels"]["service.istio.io/canonical-revision"] == "v1"
    assert meta["labels"]["app"] == "hello"  # the pod's own labels stay
    annotations = meta["annotations"]
    assert annotations["prometheus.io/port"] == "15020"
    assert annotations["prometheus.io/path"] == "/stats/prometheus"
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["kubectl.kubernetes.io/default-container"] == "hello"
    status = json.loads(annotations["sidecar.istio.io/status"])
    assert status["containers"] == ["istio-proxy"] and status["initContainers"] == ["istio-init"]
    assert set(status["volumes"]) == set(volumes)


def test_app_probes_are_rewritten_to_pilot_agent() -> None:
    pod = _injected(deployment_pod())
    app, proxy = pod["spec"]["containers"]
    assert app["readinessProbe"] == {
        "httpGet": {"path": "/app-health/hello/readyz", "port": 15020, "scheme": "HTTP"}
    }
    assert app["livenessProbe"] == {
        "periodSeconds": 5,
        "httpGet": {"path": "/app-health/hello/livez", "port": 15020, "scheme": "HTTP"},
    }
    probers = json.loads(_env(proxy)["ISTIO_KUBE_APP_PROBERS"])
    assert probers == {
        # the named port resolved to the number pilot-agent dials
        "/app-health/hello/readyz": {
            "httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"},
            "timeoutSeconds": 1,
        },
        "/app-health/hello/livez": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 1},
    }


def test_probe_rewriting_can_be_turned_off_per_pod() -> None:
    pod = deployment_pod()
    pod["metadata"]["annotations"] = {"sidecar.istio.io/rewriteAppHTTPProbers": "false"}
    injected = _injected(pod)
    assert injected["spec"]["containers"][0]["readinessProbe"] == {
        "httpGet": {"path": "/ready", "port": "http"}
    }
    assert "ISTIO_KUBE_APP_PROBERS" not in _env(injected["spec"]["containers"][1])


def test_injecting_twice_changes_nothing() -> None:
    once = _injected(deployment_pod())
    assert _inject(once) is None


def test_a_pod_with_an_istio_proxy_container_is_not_injected() -> None:
    pod = deployment_pod()
    pod["spec"]["containers"].append(
        {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.3"}
    )
    assert _inject(pod) is None


@pytest.mark.parametrize("where", ["labels", "annotations"])
def test_a_pod_can_opt_out(where: str) -> None:
    pod = deployment_pod()
    pod["metadata"].setdefault(where, {})["sidecar.istio.io/inject"] = "false"
    assert _inject(pod) is None


def test_a_namespace_without_the_label_gets_no_patch_unless_the_pod_opts_in() -> None:
    assert _inject(deployment_pod(), namespace="plain") is None
    pod = deployment_pod()
    pod["metadata"]["labels"]["sidecar.istio.io/inject"] = "true"
    assert _inject(pod, namespace="plain") is not None


def test_a_disabled_namespace_wins_over_the_pod() -> None:
    pod = deployment_pod()
    pod["metadata"]["labels"]["sidecar.istio.io/inject"] = "true"
    assert _inject(pod, namespace="off") is None


def test_an_unknown_namespace_trusts_the_webhook_selectors() -> None:
    assert _inject(deployment_pod(), namespace="not-seen-yet") is not None


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public"])
def test_system_namespaces_are_never_injected(namespace: str) -> None:
    pod = deployment_pod()
    pod["metadata"]["labels"]["sidecar.istio.io/inject"] = "true"
    assert _inject(pod, namespace=namespace) is None


def test_host_network_pods_are_not_injected() -> None:
    pod = deployment_pod()
    pod["spec"]["hostNetwork"] = True
    assert _inject(pod) is None


def test_a_bare_pod_without_labels_annotations_or_volumes() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bare", "namespace": "apps"},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    }
    injected = _injected(pod)
    _valid_pod(injected)
    assert injected["metadata"]["labels"]["service.istio.io/canonical-name"] == "bare"
    assert injected["metadata"]["labels"]["service.istio.io/canonical-revision"] == "latest"
    assert {v["name"] for v in injected["spec"]["volumes"]} >= {"istio-token", "istiod-ca-cert"}
    assert "ISTIO_META_OWNER" not in _env(injected["spec"]["containers"][1])


def test_existing_init_containers_and_volumes_are_kept() -> None:
    pod = deployment_pod()
    pod["spec"]["initContainers"] = [{"name": "migrate", "image": "busybox"}]
    pod["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    injected = _injected(pod)
    _valid_pod(injected)
    assert [c["name"] for c in injected["spec"]["initContainers"]] == ["migrate", "istio-init"]
    assert injected["spec"]["volumes"][0] == {"name": "data", "emptyDir": {}}


def test_native_sidecar_puts_istio_proxy_first_among_init_containers() -> None:
    pod = deployment_pod()
    pod["spec"]["initContainers"] = [{"name": "migrate", "image": "busybox"}]
    pod["metadata"]["annotations"] = {"sidecar.istio.io/nativeSidecar": "true"}
    injected = _injected(pod)
    _valid_pod(injected)
    names = [c["name"] for c in injected["spec"]["initContainers"]]
    assert names == ["istio-init", "istio-proxy", "migrate"]
    assert injected["spec"]["initContainers"][1]["restartPolicy"] == "Always"
    assert [c["name"] for c in injected["spec"]["containers"]] == ["hello"]
    assert _inject(injected) is None


def test_envoy_flavour_injects_plain_envoy_with_an_istiolite_bootstrap() -> None:
    config = InjectionConfig(
        flavor="envoy",
        envoy_image="docker.io/envoyproxy/envoy:v1.32.1",
        istiolite_image="istiolite:dev",
    )
    injected = _injected(deployment_pod(), config=config)
    _valid_pod(injected)
    spec = injected["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["istio-init", "istiolite-bootstrap"]
    boot = spec["initContainers"][1]
    assert boot["image"] == "istiolite:dev" and boot["args"][0] == "bootstrap"
    args = boot["args"]
    assert args[args.index("--xds-address") + 1] == "istiod.istio-system.svc:15012"
    assert args[args.index("--token-file") + 1] == "/var/run/secrets/tokens/istio-token"
    assert args[args.index("--xds-root-cert") + 1] == "/var/run/secrets/istio/root-cert.pem"
    assert "--delta" in args
    assert args[args.index("--node-id") + 1].startswith("sidecar~$(INSTANCE_IP)~$(POD_NAME)")
    assert "app=hello" in args
    proxy = spec["containers"][1]
    assert proxy["image"] == "docker.io/envoyproxy/envoy:v1.32.1"
    assert proxy["args"][:2] == ["-c", "/etc/istio/proxy/envoy.json"]
    # no pilot-agent: the app's probes stay as they were
    assert spec["containers"][0]["readinessProbe"] == {
        "httpGet": {"path": "/ready", "port": "http"}
    }
    init = spec["initContainers"][0]
    assert (init["image"], init["args"][0]) == ("istiolite:dev", "iptables")


def test_only_pod_creation_is_patched() -> None:
    pod = deployment_pod()
    answer = inject_review(
        parse_review(body(review(pod, namespace="apps", operation="UPDATE"))), CONFIG, _labels
    )
    assert patch_of(answer) is None and answer["response"]["allowed"] is True


WEIRD = [None, [], "x", 7, {}, [1], {"a": 1}]
PATHS = [
    ("metadata",),
    ("spec",),
    ("metadata", "labels"),
    ("metadata", "annotations"),
    ("metadata", "ownerReferences"),
    ("spec", "containers"),
    ("spec", "initContainers"),
    ("spec", "volumes"),
    ("metadata", "generateName"),
]


@pytest.mark.parametrize("flavor", ["istio", "envoy"])
@pytest.mark.parametrize("path", PATHS, ids=".".join)
def test_any_shape_gets_an_answer_never_an_exception(flavor: str, path: tuple[str, ...]) -> None:
    # Only the API server's decoded Pods are well formed; anyone reaching the port may send any.
    config = InjectionConfig(flavor=flavor)  # type: ignore[arg-type]
    for weird in WEIRD:
        r = review(deployment_pod(), namespace="apps")
        node = r["request"]["object"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = weird
        answer = inject_review(parse_review(body(r)), config, _labels)["response"]
        if not answer["allowed"]:
            assert answer["status"]["message"].startswith("Pod apps/")
            assert ".".join(path) in answer["status"]["message"]


def test_a_malformed_pod_is_refused_naming_the_field() -> None:
    r = review(deployment_pod(), namespace="apps")
    r["request"]["object"]["spec"]["containers"][0]["ports"] = "8080"
    answer = inject_review(parse_review(body(r)), CONFIG, _labels)["response"]
    assert answer["allowed"] is False
    assert answer["status"]["message"] == (
        "Pod apps/hello-v1-5d9f8c7b6-: spec.containers[0].ports: must be a list"
    )
