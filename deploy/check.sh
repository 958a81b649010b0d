#!/usr/bin/env bash
# Validates deploy/ offline: Prometheus rules (syntax and unit tests) and
# configuration with promtool; the Kubernetes manifests rendered by
# kustomize (both autoscaling variants), validated against the Kubernetes
# 1.31 schemas (kubernetes-validate; KEDA's ScaledObject has no bundled
# schema and is checked structurally) and checked for what every role
# needs; the compose file (`docker-compose config`) and the Grafana
# dashboard. That every metric the rules, the dashboard and the KEDA
# triggers query is one Ferry exports is checked against a live /metrics
# by the cli test `monitoring`.
# promtool, docker-compose and kubectl come from Debian's `prometheus`,
# `docker-compose` and `kubectl` packages, kubernetes-validate from PyPI
# into the test venv (scripts/peer-venv.sh), each installed on first use.
set -euo pipefail
cd "$(dirname "$0")"

apt_install() {
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  echo "installing $1 (Debian package $2)"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$2" >/dev/null
}
command -v promtool >/dev/null || apt_install promtool prometheus
command -v docker-compose >/dev/null || apt_install docker-compose docker-compose
command -v kubectl >/dev/null || apt_install kubectl kubectl
# shellcheck source=../scripts/peer-venv.sh
source ../scripts/peer-venv.sh
install_peer kubernetes-validate kubernetes-validate==1.37.0

echo "-- prometheus rules"
promtool check rules prometheus/ferry.rules.yml
(cd prometheus && promtool test rules ferry.rules.test.yml)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The compose file mounts the rules at /etc/prometheus; check the same
# configuration with the path pointing here.
sed "s|/etc/prometheus/ferry.rules.yml|$PWD/prometheus/ferry.rules.yml|" prometheus/prometheus.yml > "$work/prometheus.yml"
promtool check config "$work/prometheus.yml"

echo "-- kubernetes"
kubectl kustomize kubernetes > "$work/keda.yaml"
mkdir "$work/hpa"
cp -r kubernetes/. "$work/hpa/"
sed -i 's|components/keda|components/hpa|' "$work/hpa/kustomization.yaml"
kubectl kustomize "$work/hpa" > "$work/hpa.yaml"
for manifests in "$work/keda.yaml" "$work/hpa.yaml"; do
  "$venv/bin/kubernetes-validate" --quiet --strict --kubernetes-version 1.31.0 "$manifests"
done

echo "-- compose"
FERRY_MASTER_KEY=check FERRY_JWT_HS256_SECRET=check docker-compose -f docker-compose.yml config --quiet

echo "-- manifests, compose, dashboard"
"$venv/bin/python" - "$work/keda.yaml" "$work/hpa.yaml" <<'PY'
import json, sys, yaml

def fail(message):
    sys.exit(f"deploy check failed: {message}")

def docs(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]

def by_kind(documents, kind):
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}

keda, hpa = docs(sys.argv[1]), docs(sys.argv[2])
for documents in (keda, hpa):
    for d in documents:
        if d["metadata"].get("namespace", "ferry") != "ferry":
            fail(f"{d['kind']} {d['metadata']['name']} outside the ferry namespace")
    deployments = by_kind(documents, "Deployment")
    if set(deployments) != {"ferry-api", "ferry-worker", "ferry-scheduler"}:
        fail(f"deployments: {sorted(deployments)}")
    for name, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        role = name.removeprefix("ferry-")
        if not spec["securityContext"].get("runAsNonRoot"):
            fail(f"{name} may run as root")
        (container,) = spec["containers"]
        if container["args"][0] != role:
            fail(f"{name} runs `ferry {container['args'][0]}`")
        if container["readinessProbe"]["httpGet"]["path"] != "/readyz":
            fail(f"{name} readiness is not /readyz")
        if container["livenessProbe"]["httpGet"]["path"] != "/healthz":
            fail(f"{name} liveness is not /healthz")
        sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
        if sources != {"ferry-config", "ferry-secrets"}:
            fail(f"{name} reads its settings from {sorted(sources)}")
        if not container["image"].startswith("ghcr.io/"):
            fail(f"{name} image {container['image']} was not replaced")
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in selector.items()):
            fail(f"{name} selector does not match its pods")
    config = by_kind(documents, "ConfigMap")["ferry-config"]["data"]
    secret = by_kind(documents, "Secret")["ferry-secrets"]["stringData"]
    for key in list(config) + list(secret):
        if not (key.startswith("FERRY_") or key.startswith("AWS_")):
            fail(f"unexpected setting {key}")
    for key in ("FERRY_DATABASE_URL", "FERRY_MASTER_KEY"):
        if key not in secret:
            fail(f"{key} is not in the Secret")
    if "FERRY_MASTER_KEY" in config or "FERRY_DATABASE_URL" in config:
        fail("a secret setting is in the ConfigMap")
    budgets = by_kind(documents, "PodDisruptionBudget")
    if len(budgets) != 3:
        fail(f"disruption budgets: {sorted(budgets)}")
    services = by_kind(documents, "Service")
    if "ferry-api" not in services:
        fail("no api Service")
    if "ferry-migrate" not in by_kind(documents, "Job"):
        fail("no migration Job")

scaled = by_kind(keda, "ScaledObject")["ferry-worker"]
if scaled["spec"]["scaleTargetRef"]["name"] != "ferry-worker":
    fail("the ScaledObject does not scale the workers")
triggers = {t["name"]: t for t in scaled["spec"]["triggers"]}
if set(triggers) != {"queue-length", "oldest-job-age"}:
    fail(f"KEDA triggers: {sorted(triggers)}")
if "fallback" not in scaled["spec"]:
    fail("the ScaledObject has no fallback")
if by_kind(keda, "HorizontalPodAutoscaler"):
    fail("KEDA and a plain HPA would both scale the workers")
if "ferry-worker" not in by_kind(hpa, "HorizontalPodAutoscaler") or by_kind(hpa, "ScaledObject"):
    fail("the hpa variant does not scale the workers with an HPA alone")

compose = yaml.safe_load(open("docker-compose.yml"))
services = compose["services"]
for service in ("postgres", "redis", "minio", "migrate", "api", "worker", "scheduler", "prometheus", "grafana"):
    if service not in services:
        fail(f"compose has no {service} service")
for role in ("api", "worker", "scheduler", "migrate"):
    command = services[role]["command"][0]
    if command != role:
        fail(f"compose {role} runs `ferry {command}`")
if "ports" in services["worker"] or "container_name" in services["worker"]:
    fail("the compose worker cannot scale: it publishes a port or names its container")

dashboard = json.load(open("grafana/dashboards/ferry.json"))
ids = [p["id"] for p in dashboard["panels"]]
if len(ids) != len(set(ids)):
    fail("dashboard panel ids repeat")
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        if not target.get("expr"):
            fail(f"panel {panel['title']} has an empty query")
print(f"manifests: {len(keda)} objects (KEDA), {len(hpa)} (HPA); compose: {len(services)} services; dashboard: {len(ids)} panels")
PY
echo "deploy/ checks passed"
