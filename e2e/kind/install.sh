#!/usr/bin/env bash
# Install Trialforge into a kind cluster the way a cluster admin would, and run
# a real experiment on it (for people who have Docker; CI uses e2e/cluster).
#
#   e2e/kind/install.sh           # cluster, images, chart, example; waits for success
#   e2e/kind/install.sh --down    # delete the kind cluster
#
# Steps: create the kind cluster "trialforge" (e2e/kind/kind-config.yaml) unless
# it exists; docker build images/operator and images/trainer; kind load both;
# helm upgrade --install charts/trialforge into trialforge-system; kubectl apply
# e2e/kind/experiment.yaml into trialforge-demo; wait until the Experiment
# Succeeded (PyTorch on CPU, about 5 minutes; the first image build takes longer).
#
# Needs docker, kind, kubectl and helm on PATH (kubectl and helm built by
# e2e/build in ~/.cache/trialforge/bin are used when not). Environment:
#   KIND_CLUSTER_NAME (trialforge)  KIND_NODE_IMAGE (kindest/node:v1.36.1)
#   TAG (dev)  RELEASE_NAMESPACE (trialforge-system)  DEMO_NAMESPACE (trialforge-demo)
#   TIMEOUT_SECONDS (1800)  HELM_EXTRA_ARGS (extra `helm upgrade` arguments)
set -euo pipefail

NAME="${KIND_CLUSTER_NAME:-trialforge}"
NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.36.1}"
TAG="${TAG:-dev}"
RELEASE_NS="${RELEASE_NAMESPACE:-trialforge-system}"
DEMO_NS="${DEMO_NAMESPACE:-trialforge-demo}"
TIMEOUT="${TIMEOUT_SECONDS:-1800}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
KUBECONFIG_OUT="${KUBECONFIG_OUT:-$REPO/e2e/.state/kind-$NAME.kubeconfig}"
OPERATOR_IMAGE="trialforge/operator:$TAG"
TRAINER_IMAGE="trialforge/example-trainer:$TAG"
EXPERIMENT=torch-digits

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
say() { printf '\n==> %s\n' "$*"; }
die() { echo "error: $*" >&2; exit 1; }

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --down) kind delete cluster --name "$NAME"; rm -f "$KUBECONFIG_OUT"; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1" >&2; usage; exit 2 ;;
esac

# kubectl and helm: from PATH, else the ones e2e/build made.
PATH="$PATH:${TRIALFORGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trialforge}/bin"
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || die "$tool not found on PATH"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not running"

say "kind cluster $NAME"
mkdir -p "$(dirname "$KUBECONFIG_OUT")"
if ! kind get clusters 2>/dev/null | grep -qx "$NAME"; then
  kind create cluster --name "$NAME" --image "$NODE_IMAGE" \
    --config "$HERE/kind-config.yaml" --wait 180s
fi
kind get kubeconfig --name "$NAME" > "$KUBECONFIG_OUT"
export KUBECONFIG="$KUBECONFIG_OUT"
kubectl get nodes

say "building $OPERATOR_IMAGE and $TRAINER_IMAGE"
docker build -f "$REPO/images/operator/Dockerfile" -t "$OPERATOR_IMAGE" "$REPO"
docker build -f "$REPO/images/trainer/Dockerfile" -t "$TRAINER_IMAGE" "$REPO"
docker run --rm "$OPERATOR_IMAGE" --version

say "loading the images into the kind nodes"
kind load docker-image --name "$NAME" "$OPERATOR_IMAGE" "$TRAINER_IMAGE"

say "helm upgrade --install trialforge"
# The images exist only on the nodes: never pull them (pullPolicy Never for the
# operator; the collector sidecar and the trainer use IfNotPresent, which finds them).
# shellcheck disable=SC2086  # HELM_EXTRA_ARGS is a list of words on purpose
helm upgrade --install trialforge "$REPO/charts/trialforge" \
  --namespace "$RELEASE_NS" --create-namespace \
  --set image.repository=trialforge/operator \
  --set image.tag="$TAG" \
  --set image.pullPolicy=Never \
  --wait --timeout 5m ${HELM_EXTRA_ARGS:-}
kubectl -n "$RELEASE_NS" rollout status deployment/trialforge --timeout=120s
kubectl -n "$RELEASE_NS" get pods,svc,lease

say "experiment $EXPERIMENT in $DEMO_NS"
kubectl create namespace "$DEMO_NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$DEMO_NS" apply -f "$HERE/experiment.yaml"

deadline=$(( $(date +%s) + TIMEOUT ))
phase=""
while :; do
  phase="$(kubectl -n "$DEMO_NS" get experiment "$EXPERIMENT" -o jsonpath='{.status.phase}' || true)"
  case "$phase" in
    Succeeded|Failed) break ;;
  esac
  if (( $(date +%s) > deadline )); then
    phase="timed out after ${TIMEOUT}s (last phase: ${phase:-none})"
    break
  fi
  kubectl -n "$DEMO_NS" get experiment "$EXPERIMENT" --no-headers 2>/dev/null || true
  sleep 15
done

kubectl -n "$DEMO_NS" get experiments,trials
if [[ "$phase" != Succeeded ]]; then
  kubectl -n "$DEMO_NS" describe experiment "$EXPERIMENT" || true
  kubectl -n "$DEMO_NS" get pods -o wide || true
  kubectl -n "$RELEASE_NS" logs deployment/trialforge --tail=100 || true
  die "experiment $EXPERIMENT: $phase"
fi

best="$(kubectl -n "$DEMO_NS" get experiment "$EXPERIMENT" \
  -o jsonpath='{.status.best.trial} {.status.bestValue}')"
cat <<MSG

Experiment $EXPERIMENT Succeeded; best trial and val_accuracy: $best

  export KUBECONFIG=$KUBECONFIG_OUT
  kubectl -n $DEMO_NS get xp,trials
  kubectl -n $RELEASE_NS port-forward svc/trialforge 8080 & curl -s localhost:8080/metrics | grep ^trialforge_

Delete the cluster with: e2e/kind/install.sh --down
MSG
