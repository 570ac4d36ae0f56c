#!/usr/bin/env bash
# From nothing to a checked mesh on kind, and back to nothing.
#
# Needs: docker (running), kind, kubectl. Creates a kind cluster, builds the istiolite image and
# loads it, installs manifests/overlays/kind (istiolite as istiod), deploys e2e/kind/sample.yaml
# into an injected namespace (Istio's own sidecar, istio/proxyv2), then checks: traffic by name,
# the 90/10 canary, mutual TLS (the client's SPIFFE identity reaches the server; a pod without a
# sidecar is refused under STRICT), an AuthorizationPolicy denial, an invalid VirtualService
# refused with its field named, `grpcurl list` on 15010, and `istiolite proxy-status` showing
# every sidecar SYNCED. Deletes the cluster on exit unless KEEP_CLUSTER=1.
#
#   e2e/kind/run.sh            # CLUSTER=istiolite by default
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cluster=${CLUSTER:-istiolite}
image=istiolite:dev

step() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }
run() { printf '+ %s\n' "$*"; "$@"; }

cleanup() {
  local status=$?
  if [[ $status -ne 0 ]]; then
    step "diagnostics (exit $status)"
    kubectl -n istio-system logs deploy/istiod --tail=50 2>/dev/null || true
    kubectl get pods -A -o wide 2>/dev/null || true
  fi
  if [[ ${KEEP_CLUSTER:-0} == 1 ]]; then
    step "keeping cluster $cluster (kind delete cluster --name $cluster)"
  else
    step "deleting cluster $cluster"
    kind delete cluster --name "$cluster" || true
  fi
  exit "$status"
}

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
docker info >/dev/null 2>&1 || fail "docker is not running"

step "create kind cluster $cluster"
run kind create cluster --name "$cluster" --wait 120s
trap cleanup EXIT
kubectl config use-context "kind-$cluster" >/dev/null

step "build and load image $image"
run docker build -t "$image" "$repo"
run kind load docker-image "$image" --name "$cluster"

step "install istiolite as istiod"
run kubectl apply --server-side -k "$repo/manifests/overlays/kind"
run kubectl -n istio-system rollout status deploy/istiod --timeout=180s

step "wait for the leader to patch the webhooks' caBundle"
for _ in $(seq 60); do
  bundle=$(kubectl get validatingwebhookconfiguration istio-validator-istio-system \
    -o jsonpath='{.webhooks[0].clientConfig.caBundle}')
  policy=$(kubectl get validatingwebhookconfiguration istio-validator-istio-system \
    -o jsonpath='{.webhooks[0].failurePolicy}')
  injector=$(kubectl get mutatingwebhookconfiguration istio-sidecar-injector \
    -o jsonpath='{.webhooks[0].clientConfig.caBundle}')
  [[ -n $bundle && -n $injector && $policy == Fail ]] && break
  sleep 2
done
[[ -n $bundle && -n $injector && $policy == Fail ]] || fail "caBundle not patched into the webhook configurations"

step "deploy the sample into the injected namespace mesh"
run kubectl apply -f "$here/sample.yaml"
for deploy in mesh/hello-v1 mesh/hello-v2 mesh/client outside/client; do
  run kubectl -n "${deploy%/*}" rollout status "deploy/${deploy#*/}" --timeout=240s
done
containers=$(kubectl -n mesh get pod -l app=hello -o jsonpath='{.items[0].spec.containers[*].name}')
[[ $containers == *istio-proxy* ]] || fail "hello was not injected (containers: $containers)"

mesh_curl() { kubectl -n mesh exec deploy/client -c client -- curl -sS --max-time 5 "$@"; }

step "traffic by name"
out=$(mesh_curl http://hello/hostname)
[[ $out == hello-v* ]] || fail "unexpected answer: $out"
echo "hello answered from $out"

step "90/10 canary"
# shellcheck disable=SC2016  # expanded in the client pod
v2=$(kubectl -n mesh exec deploy/client -c client -- sh -c \
  'for i in $(seq 100); do curl -sS --max-time 5 http://hello/hostname; echo; done' | grep -c '^hello-v2' || true)
echo "v2 served $v2 of 100"
(( v2 >= 2 && v2 <= 25 )) || fail "v2 served $v2 of 100, not about 10"

step "mutual TLS: the client's SPIFFE identity reaches hello"
xfcc=$(mesh_curl 'http://hello/header?key=X-Forwarded-Client-Cert')
echo "XFCC: $xfcc"
[[ $xfcc == *"URI=spiffe://cluster.local/ns/mesh/sa/client"* ]] || fail "no client identity in XFCC"

step "STRICT: a pod without a sidecar is refused"
if kubectl -n outside exec deploy/client -- curl -sS --max-time 5 http://hello.mesh/hostname; then
  fail "plaintext request from outside the mesh was answered"
fi

step "AuthorizationPolicy: DELETE is denied"
code=$(mesh_curl -o /dev/null -w '%{http_code}' -X DELETE http://hello/hostname)
[[ $code == 403 ]] || fail "DELETE got $code, expected 403"

step "an invalid VirtualService is refused, naming the field"
if msg=$(kubectl apply -f "$here/invalid-virtualservice.yaml" 2>&1); then
  fail "invalid VirtualService was accepted: $msg"
fi
echo "$msg"
[[ $msg == *"spec.http[0].route[0].weight"* ]] || fail "the refusal does not name the field"

step "grpcurl list on istiod:15010"
services=$(kubectl run grpcurl --rm -i --restart=Never --quiet \
  --image=fullstorydev/grpcurl:v1.9.1 -- -plaintext istiod.istio-system:15010 list)
echo "$services"
[[ $services == *envoy.service.discovery.v3.AggregatedDiscoveryService* ]] \
  || fail "ADS not listed by reflection"

step "istiolite proxy-status: every sidecar SYNCED"
status=$(kubectl -n istio-system exec deploy/istiod -- istiolite proxy-status)
echo "$status"
for pod in $(kubectl -n mesh get pods -o jsonpath='{.items[*].metadata.name}'); do
  line=$(grep -F "$pod.mesh" <<<"$status") || fail "$pod is not connected"
  [[ $line != *STALE* && $line != *"NOT SENT"* && $line != *ERROR* ]] || fail "$pod not synced: $line"
done

step "all checks passed"
