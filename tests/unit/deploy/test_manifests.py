"""manifests/ as `kubectl apply -k` sees it: rendered by kubectl's kustomize, every object valid
against the Kubernetes OpenAPI schemas (strict), installed under istiod's names, RBAC without
wildcards and as narrow as the issue asks."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from istiolite.model.crds import PLURALS
from istiolite.model.kinds import KINDS
from istiolite.model.mesh_config import parse_mesh_config
from istiolite.sources.kube.resources import WATCHED
from istiolite.webhooks.validate import VALIDATED_KINDS

ROOT = Path(__file__).resolve().parents[3]
VARIANTS = ["manifests", "manifests/overlays/kind", "manifests/overlays/with-gateway-api"]


def _render(variant: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (its built-in kustomize renders manifests/) is not on PATH"
    result = subprocess.run(
        [kubectl, "kustomize", str(ROOT / variant)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module", params=VARIANTS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _render(request.param)


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: list[dict[str, Any]],
) -> None:
    version = kubernetes_validate.latest_version()
    for obj in rendered:
        kubernetes_validate.validate(obj, version, strict=True)


def test_istiods_names_and_ports(rendered: list[dict[str, Any]]) -> None:
    service = _one(rendered, "Service", "istiod")
    assert service["metadata"]["namespace"] == "istio-system"
    ports = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert ports == {15010: 15010, 15012: 15012, 443: 15017, 15014: 15014}
    _one(rendered, "Namespace", "istio-system")
    _one(rendered, "ServiceAccount", "istiod")
    _one(rendered, "PodDisruptionBudget", "istiod")
    mesh = yaml.safe_load(_one(rendered, "ConfigMap", "istio")["data"]["mesh"])
    assert mesh["trustDomain"] == "cluster.local"
    assert mesh["defaultConfig"]["proxyMetadata"]["ISTIO_DELTA_XDS"] == "true"
    assert mesh["outboundTrafficPolicy"]["mode"] == "ALLOW_ANY"


def test_istiolite_reads_the_mesh_config_it_installs(rendered: list[dict[str, Any]]) -> None:
    """The ConfigMap istio is mounted where istiod has it and passed with --mesh-config; its
    `mesh` parses with istiolite's own reader, every field known, nothing refused."""
    configmap = _one(rendered, "ConfigMap", "istio")
    parsed = parse_mesh_config(configmap["data"]["mesh"])
    assert parsed.notes == ()
    assert parsed.config.trust_domain == "cluster.local"
    assert parsed.config.discovery_address == "istiod.istio-system.svc:15012"
    pod = _one(rendered, "Deployment", "istiod")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "--mesh-config=/etc/istio/config/mesh" in container["args"]
    assert not any(a.startswith("--trust-domain") for a in container["args"])  # the file says
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/istio/config"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "istio"
    assert mount["readOnly"] is True


def test_the_deployment_is_locked_down(rendered: list[dict[str, Any]]) -> None:
    deployment = _one(rendered, "Deployment", "istiod")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "istiod"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "podAntiAffinity" in pod["affinity"]
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8080}
    assert "livenessProbe" in container
    assert set(container["resources"]) == {"requests", "limits"}
    ports = {p["containerPort"] for p in container["ports"]}
    assert ports == {8080, 15010, 15012, 15014, 15017}
    assert container["args"][0] == "serve"


def test_base_runs_two_replicas() -> None:
    deployment = _one(_render("manifests"), "Deployment", "istiod")
    assert deployment["spec"]["replicas"] == 2


def test_webhook_configurations_call_istiod(rendered: list[dict[str, Any]]) -> None:
    validator = _one(rendered, "ValidatingWebhookConfiguration", "istio-validator-istio-system")
    (hook,) = validator["webhooks"]
    assert hook["clientConfig"]["service"] == {
        "name": "istiod", "namespace": "istio-system", "path": "/validate", "port": 443,
    }  # fmt: skip
    covered = {
        (group, version, resource)
        for rule in hook["rules"]
        for group in rule["apiGroups"]
        for version in rule["apiVersions"]
        for resource in rule["resources"]
    }
    wanted = {
        (kind.group, version, PLURALS[name])
        for name, kind in VALIDATED_KINDS.items()
        for version in kind.versions
    }
    assert {c for c in covered if c[1] != "*"} == wanted
    # Kinds the webhook allows with a warning that they have no effect, as every version.
    assert {(g, r) for g, v, r in covered if v == "*"} == {
        ("networking.istio.io", "envoyfilters"),
        ("networking.istio.io", "proxyconfigs"),
        ("networking.istio.io", "workloadgroups"),
        ("telemetry.istio.io", "telemetries"),
        ("extensions.istio.io", "wasmplugins"),
    }
    assert hook["admissionReviewVersions"] == ["v1"] and hook["sideEffects"] == "None"
    injector = _one(rendered, "MutatingWebhookConfiguration", "istio-sidecar-injector")
    for hook in injector["webhooks"]:
        assert hook["clientConfig"]["service"]["path"] == "/inject"
        assert hook["failurePolicy"] == "Fail"
        assert hook["rules"] == [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
            }
        ]
    selectors = [h["namespaceSelector"]["matchExpressions"][0] for h in injector["webhooks"]]
    assert {"key": "istio-injection", "operator": "In", "values": ["enabled"]} in selectors


def _rules(rendered: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in rendered:
        if obj["kind"] in ("ClusterRole", "Role"):
            for rule in obj["rules"]:
                yield obj["kind"], rule


def test_rbac_has_no_wildcards(rendered: list[dict[str, Any]]) -> None:
    for _kind, rule in _rules(rendered):
        for key in ("verbs", "resources", "apiGroups", "resourceNames"):
            assert "*" not in rule.get(key, []), rule
            assert not any("*" in item for item in rule.get(key, [])), rule


def _allowed(
    rendered: list[dict[str, Any]], scope: str, group: str, resource: str, verb: str
) -> bool:
    return any(
        kind == scope
        and group in rule["apiGroups"]
        and resource in rule["resources"]
        and verb in rule["verbs"]
        for kind, rule in _rules(rendered)
    )


def test_rbac_writes_secrets_only_in_istio_system(rendered: list[dict[str, Any]]) -> None:
    role = _one(rendered, "Role", "istiod-istio-system")
    assert role["metadata"]["namespace"] == "istio-system"
    for verb in ("create", "update", "patch", "delete"):
        assert not _allowed(rendered, "ClusterRole", "", "secrets", verb)
    assert _allowed(rendered, "Role", "", "secrets", "create")
    assert _allowed(rendered, "ClusterRole", "", "secrets", "list")  # gateway credentials
    assert _allowed(rendered, "Role", "coordination.k8s.io", "leases", "update")
    assert not _allowed(rendered, "ClusterRole", "coordination.k8s.io", "leases", "update")
    assert _allowed(rendered, "ClusterRole", "authentication.k8s.io", "tokenreviews", "create")
    for resource in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        assert _allowed(rendered, "ClusterRole", "admissionregistration.k8s.io", resource, "patch")


def test_rbac_lets_istiolite_watch_every_kind_it_reads(rendered: list[dict[str, Any]]) -> None:
    plurals = {**PLURALS, "Service": "services", "Pod": "pods", "Namespace": "namespaces",
               "Node": "nodes", "Secret": "secrets", "EndpointSlice": "endpointslices",
               **{name: WATCHED[name].plural for name in KINDS
                  if KINDS[name].group == "gateway.networking.k8s.io"}}  # fmt: skip
    assert set(plurals) == set(KINDS)
    for name, kind in KINDS.items():
        for verb in ("list", "watch"):
            assert _allowed(rendered, "ClusterRole", kind.group, plurals[name], verb), name
