"""/inject: sidecar injection as a JSONPatch on a Pod being created.

Which pods: the webhook configuration's selectors pick namespaces labelled
`istio-injection=enabled` and pods labelled `sidecar.istio.io/inject=true`, as Istio's do; here
the pod's own `sidecar.istio.io/inject` (label or annotation) decides first ("false" opts out,
"true" in), then its namespace's `istio-injection` label when istiolite knows the namespace
(unknown: the API server's selection stands). Never injected: pods on the host network, pods in
kube-system / kube-public, and pods already injected (a `sidecar.istio.io/status` annotation or
an `istio-proxy` container) — injecting twice changes nothing.

The patch works on pods without labels, annotations, init containers or volumes, and on pods
with only `generateName`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any

from istiolite.webhooks import sidecar_template as tpl
from istiolite.webhooks.admission import AdmissionRequest, allow, deny
from istiolite.webhooks.probes import APP_PROBERS_ENV, rewrite_probes

INJECT_KEY = "sidecar.istio.io/inject"
NAMESPACE_LABEL = "istio-injection"
NATIVE_SIDECAR_ANNOTATION = "sidecar.istio.io/nativeSidecar"
REWRITE_PROBES_ANNOTATION = "sidecar.istio.io/rewriteAppHTTPProbers"
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public"})

# Namespace name → its labels, or None when istiolite does not know the namespace.
NamespaceLabels = Callable[[str], Mapping[str, str] | None]


def _mapping(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def injection_decision(
    pod: Mapping[str, Any], namespace: str, namespace_labels: NamespaceLabels
) -> tuple[bool, str]:
    """(inject?, why) for a pod being created in `namespace`."""
    meta = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    labels, annotations = _mapping(meta.get("labels")), _mapping(meta.get("annotations"))
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    if tpl.STATUS_ANNOTATION in annotations or any(
        isinstance(c, dict) and c.get("name") == tpl.PROXY_CONTAINER
        for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    ):
        return False, "already injected"
    if spec.get("hostNetwork") is True:
        return False, "pod uses the host network"
    if namespace in IGNORED_NAMESPACES:
        return False, f"namespace {namespace} is never injected"
    pod_choice = labels.get(INJECT_KEY, annotations.get(INJECT_KEY, "")).lower()
    if pod_choice in ("false", "n", "no", "off"):
        return False, f"{INJECT_KEY}={pod_choice} on the pod"
    ns_labels = namespace_labels(namespace)
    ns_choice = None if ns_labels is None else ns_labels.get(NAMESPACE_LABEL)
    if ns_choice == "disabled":
        return False, f"namespace {namespace} has {NAMESPACE_LABEL}=disabled"
    if pod_choice in ("true", "y", "yes", "on"):
        return True, f"{INJECT_KEY}=true on the pod"
    if ns_labels is None:
        return True, "selected by the webhook configuration (namespace not known here)"
    if ns_choice == "enabled":
        return True, f"namespace {namespace} has {NAMESPACE_LABEL}=enabled"
    return False, f"namespace {namespace} is not labelled {NAMESPACE_LABEL}=enabled"


def _workload(pod: Mapping[str, Any], namespace: str) -> tuple[str, str]:
    """(workload name, owner URI) as Istio derives them: a Deployment's pods by their
    ReplicaSet's name without the template hash."""
    meta = pod.get("metadata") or {}
    labels = _mapping(meta.get("labels"))
    owners = [o for o in meta.get("ownerReferences") or [] if isinstance(o, dict)]
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if owner is not None and isinstance(owner.get("name"), str):
        name, kind = owner["name"], str(owner.get("kind", ""))
        api = str(owner.get("apiVersion", "v1"))
        # A Deployment's ReplicaSet is named <deployment>-<pod-template-hash>.
        pod_hash = labels.get("pod-template-hash")
        if kind == "ReplicaSet" and pod_hash and name.endswith(f"-{pod_hash}"):
            name, kind, api = name[: -len(pod_hash) - 1], "Deployment", "apps/v1"
        prefix = "api" if "/" not in api else "apis"
        return name, f"kubernetes://{prefix}/{api}/namespaces/{namespace}/{kind.lower()}s/{name}"
    name = meta.get("name") or str(meta.get("generateName") or "").rstrip("-") or "unknown"
    return str(name), ""


def _escape(key: str) -> str:
    """A JSON Pointer reference token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _map_ops(path: str, current: Any, additions: dict[str, str]) -> list[dict[str, Any]]:
    if not isinstance(current, dict):
        return [{"op": "add", "path": path, "value": additions}]
    return [
        {"op": "add", "path": f"{path}/{_escape(k)}", "value": v}
        for k, v in additions.items()
        if current.get(k) != v
    ]


def _list_op(path: str, current: Any, value: list[Any]) -> dict[str, Any]:
    return {"op": "replace" if isinstance(current, list) else "add", "path": path, "value": value}


def sidecar_patch(
    pod: Mapping[str, Any], namespace: str, config: tpl.InjectionConfig
) -> list[dict[str, Any]]:
    """The JSONPatch that turns `pod` into an injected pod."""
    meta = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else None
    spec = copy.deepcopy(pod.get("spec") or {})
    labels = _mapping((meta or {}).get("labels"))
    annotations = _mapping((meta or {}).get("annotations"))
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    init_containers = [c for c in spec.get("initContainers") or [] if isinstance(c, dict)]
    app_names = [str(c.get("name")) for c in containers]
    ports = [p for c in containers for p in c.get("ports") or [] if isinstance(p, dict)]
    workload_name, owner = _workload(pod, namespace)
    workload = tpl.Workload(namespace, labels, annotations, app_names, ports, workload_name, owner)
    new_labels = {**tpl.canonical_labels(labels, workload_name)}

    volumes = tpl.volumes(config)
    if config.flavor == "envoy":
        proxy = tpl.envoy_proxy(config)
        injected_init = [tpl.iptables_init(config), tpl.envoy_bootstrap_init(config, workload)]
    else:
        proxy = tpl.istio_proxy(config, workload)
        injected_init = [tpl.iptables_init(config)]
        if annotations.get(REWRITE_PROBES_ANNOTATION, "true").lower() != "false":
            rewritten = rewrite_probes(containers)
            if rewritten.changed:
                containers = rewritten.containers
                proxy["env"].append(
                    {"name": APP_PROBERS_ENV, "value": json.dumps(rewritten.probers)}
                )
    native = config.native_sidecars or annotations.get(NATIVE_SIDECAR_ANNOTATION) == "true"
    if native:
        # Started before the app's init containers and kept running: the app's init
        # containers already have the mesh, and the app starts once the proxy is ready.
        proxy["restartPolicy"] = "Always"
        proxy["startupProbe"] = {
            "httpGet": {"path": "/healthz/ready", "port": tpl.HEALTH_PORT},
            "periodSeconds": 1,
            "timeoutSeconds": 3,
            "failureThreshold": 600,
        }
        new_init = [*injected_init, proxy, *init_containers]
        new_containers = containers
        injected_names = [c["name"] for c in injected_init] + [tpl.PROXY_CONTAINER]
        status = tpl.status_annotation(
            injected_names, [], [v["name"] for v in volumes], config.revision
        )
    else:
        new_init = [*init_containers, *injected_init]
        new_containers = [*containers, proxy]
        status = tpl.status_annotation(
            [c["name"] for c in injected_init],
            [tpl.PROXY_CONTAINER],
            [v["name"] for v in volumes],
            config.revision,
        )
    new_annotations: dict[str, str] = {}
    if app_names:
        new_annotations["kubectl.kubernetes.io/default-container"] = annotations.get(
            "kubectl.kubernetes.io/default-container", app_names[0]
        )
        new_annotations["kubectl.kubernetes.io/default-logs-container"] = annotations.get(
            "kubectl.kubernetes.io/default-logs-container", app_names[0]
        )
    for key, value in (
        ("prometheus.io/port", str(tpl.STATUS_PORT)),
        ("prometheus.io/path", "/stats/prometheus"),
        ("prometheus.io/scrape", "true"),
    ):
        new_annotations[key] = annotations.get(key, value)
    new_annotations["istio.io/rev"] = config.revision
    new_annotations[tpl.STATUS_ANNOTATION] = status

    ops: list[dict[str, Any]] = []
    if meta is None:
        ops.append({"op": "add", "path": "/metadata", "value": {}})
    if pod.get("spec") is None:
        ops.append({"op": "add", "path": "/spec", "value": {}})
    ops += _map_ops("/metadata/labels", (meta or {}).get("labels"), new_labels)
    ops += _map_ops("/metadata/annotations", (meta or {}).get("annotations"), new_annotations)
    ops.append(_list_op("/spec/initContainers", spec.get("initContainers"), new_init))
    ops.append(_list_op("/spec/containers", spec.get("containers"), new_containers))
    existing_volumes = spec.get("volumes")
    if isinstance(existing_volumes, list):
        ops += [{"op": "add", "path": "/spec/volumes/-", "value": v} for v in volumes]
    else:
        ops.append({"op": "add", "path": "/spec/volumes", "value": volumes})
    return ops


def _shape_problem(pod: Mapping[str, Any]) -> str | None:
    """The first field whose JSON type is not a Pod's (only a caller other than the API server,
    which decodes the Pod first, can send one), as `field: must be …`."""
    checks: list[tuple[str, Any, type]] = [
        ("metadata", pod.get("metadata"), dict),
        ("spec", pod.get("spec"), dict),
    ]
    meta = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    assert isinstance(meta, dict) and isinstance(spec, dict)
    checks += [(f"metadata.{k}", meta.get(k), dict) for k in ("labels", "annotations")]
    checks.append(("metadata.ownerReferences", meta.get("ownerReferences"), list))
    checks += [
        (f"spec.{k}", spec.get(k), list) for k in ("containers", "initContainers", "volumes")
    ]
    for name, value, wanted in checks:
        if value is not None and not isinstance(value, wanted):
            return f"{name}: must be {'a mapping' if wanted is dict else 'a list'}"
    for list_name in ("containers", "initContainers"):
        for i, container in enumerate(spec.get(list_name) or []):
            where = f"spec.{list_name}[{i}]"
            if not isinstance(container, dict):
                return f"{where}: must be a mapping"
            if not isinstance(container.get("ports", []), list):
                return f"{where}.ports: must be a list"
    return None


def inject_review(
    request: AdmissionRequest, config: tpl.InjectionConfig, namespace_labels: NamespaceLabels
) -> dict[str, Any]:
    """Allowed always (a pod that cannot be injected is still created); patched when chosen."""
    if request.operation != "CREATE" or request.kind != "Pod" or request.group != "":
        return allow(request)
    assert request.object is not None
    pod = request.object
    problem = _shape_problem(pod)
    if problem is not None:
        return deny(request, f"{request.describe()}: {problem}")
    meta = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    namespace = request.namespace or str((meta or {}).get("namespace") or "default")
    inject, _why = injection_decision(pod, namespace, namespace_labels)
    if not inject:
        return allow(request)
    return allow(request, patch=sidecar_patch(pod, namespace, config))
