#!/usr/bin/env bash
# Create a kind cluster that Trialforge's cluster tests can run against, for
# people who have Docker (this repository's CI uses e2e/cluster instead).
#
#   e2e/kind/up.sh            # create cluster "trialforge", install kwok + stages
#   e2e/kind/up.sh --down     # delete it
#
# The tests schedule their pods onto kwok's fake GPU nodes (label type=kwok,
# nvidia.com/gpu capacity); kind's real nodes have no GPUs. So this script also
# installs the kwok controller in the cluster (its release manifest, image
# registry.k8s.io/kwok/kwok) and our Stages (e2e/kwok/stages.yaml), which gives
# the same scriptable pod lifecycles as the local control plane. Without kwok,
# GPU tests need real GPUs (NVIDIA device plugin) or fake extended resources,
# e.g. for a worker:
#   kubectl proxy &
#   curl -H 'Content-Type: application/json-patch+json' -X PATCH \
#     --data '[{"op":"add","path":"/status/capacity/nvidia.com~1gpu","value":"8"}]' \
#     http://127.0.0.1:8001/api/v1/nodes/trialforge-worker/status
# and pods on real nodes really pull and run their images.
set -euo pipefail

NAME="${KIND_CLUSTER_NAME:-trialforge}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.36.1}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KUBECONFIG_OUT="${KUBECONFIG_OUT:-$HERE/../.state/kind-$NAME.kubeconfig}"

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

for tool in kind kubectl docker; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found on PATH" >&2; exit 1; }
done

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --down) kind delete cluster --name "$NAME"; rm -f "$KUBECONFIG_OUT"; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1" >&2; usage; exit 2 ;;
esac

mkdir -p "$(dirname "$KUBECONFIG_OUT")"
if ! kind get clusters 2>/dev/null | grep -qx "$NAME"; then
  kind create cluster --name "$NAME" --image "$NODE_IMAGE" \
    --config "$HERE/kind-config.yaml" --wait 120s
fi
kind get kubeconfig --name "$NAME" > "$KUBECONFIG_OUT"
export KUBECONFIG="$KUBECONFIG_OUT"

# kwok controller (CRDs, RBAC, Deployment in kube-system) from its release, then
# our Stages instead of kwok's default "fast" ones.
kubectl apply -f "https://github.com/kubernetes-sigs/kwok/releases/download/${KWOK_VERSION}/kwok.yaml"
kubectl -n kube-system rollout status deployment/kwok-controller --timeout=180s
kubectl wait --for=condition=Established --timeout=60s crd/stages.kwok.x-k8s.io
kubectl apply -f "$HERE/../kwok/stages.yaml"

cat <<MSG

kind cluster "$NAME" is ready, with the kwok controller and Trialforge's Stages.
Run the cluster tests against it (the fixture installs crds/ and creates kwok GPU nodes):

  TRIALFORGE_TEST_KUBECONFIG=$KUBECONFIG_OUT .venv/bin/pytest -m cluster tests/cluster -v

Delete it with: e2e/kind/up.sh --down
MSG
