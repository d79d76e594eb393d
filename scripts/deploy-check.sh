#!/usr/bin/env bash
# Offline checks of the container image definition and the Kubernetes manifests, with no
# cluster, no registry and no network beyond PyPI on the first run:
#
#   1. deploy/Dockerfile: its toolchain is at least the workspace's rust-version; hadolint;
#   2. both overlays render with `kubectl kustomize` (Secrets from throwaway files made by
#      the overlay's own secrets/generate.sh, in a temporary copy);
#   3. every rendered object validates against the Kubernetes 1.32 schemas (strict);
#   4. checkov passes the rendered manifests and the Dockerfile with zero failed checks
#      (each skip is written beside what it skips, with its reason);
#   5. deploy/tests (pytest): the NetworkPolicies allow exactly the flows of
#      docs/architecture.md, and every pod is hardened, probed, bounded and scaled.
#   6. deploy/prometheus: `promtool check config`, `check rules` and `test rules` pass.
#
# The tools (deploy/requirements.txt) go into a virtual environment outside the clone,
# reinstalled only when that file changes: TIDEWAY_DEPLOY_VENV (default
# ~/.cache/tideway-deploy-venv). TIDEWAY_DEPLOY_RENDERED=DIR keeps the rendered overlays.
set -euo pipefail
cd "$(dirname "$0")/.."

k8s_version=1.32.0
venv=${TIDEWAY_DEPLOY_VENV:-$HOME/.cache/tideway-deploy-venv}
requirements=deploy/requirements.txt

log() { printf '[deploy-check] %s\n' "$*"; }
fail() { printf '[deploy-check] error: %s\n' "$*" >&2; exit 1; }

# --- tools ------------------------------------------------------------------------------
python=${PYTHON:-python3}
command -v "$python" >/dev/null || fail "python3 is needed"
command -v openssl >/dev/null || fail "openssl is needed (Debian package openssl)"
stamp="$venv/.requirements-sha256"
want=$( { cat "$requirements"; "$python" --version; } | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing $requirements into $venv"
  "$python" -m venv --clear "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
else
  log "tools in $venv up to date with $requirements"
fi
bin="$venv/bin"
# checkov: no calls home, no update check (the run is offline).
export BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rendered=${TIDEWAY_DEPLOY_RENDERED:-$work/rendered}
mkdir -p "$rendered"

# --- 1. the Dockerfile ------------------------------------------------------------------
workspace_rust=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
image_rust=$(sed -n 's/^ARG RUST_VERSION=\(.*\)/\1/p' deploy/Dockerfile | head -n1)
[ -n "$workspace_rust" ] && [ -n "$image_rust" ] || fail "cannot read rust-version or RUST_VERSION"
lowest=$(printf '%s\n%s\n' "$workspace_rust" "$image_rust" | sort -V | head -n1)
[ "$lowest" = "$workspace_rust" ] ||
  fail "deploy/Dockerfile builds with Rust $image_rust, older than the workspace's rust-version $workspace_rust"
log "Dockerfile toolchain $image_rust >= rust-version $workspace_rust"
"$bin/hadolint" --failure-threshold info deploy/Dockerfile
log "hadolint: deploy/Dockerfile clean"

# --- 2. render ----------------------------------------------------------------------------
cp -r deploy/k8s "$work/k8s"
deploy/k8s/overlays/distributed/secrets/generate.sh "$work/k8s/overlays/distributed/secrets" >/dev/null
for overlay in embedded distributed; do
  "$bin/kubectl" kustomize "$work/k8s/overlays/$overlay" > "$rendered/$overlay.yaml"
  log "rendered $overlay: $(grep -c '^kind: ' "$rendered/$overlay.yaml") objects"
done

# --- 3. schemas ---------------------------------------------------------------------------
"$bin/kubernetes-validate" --kubernetes-version "$k8s_version" --strict --quiet \
  "$rendered/embedded.yaml" "$rendered/distributed.yaml"
log "every object valid against the Kubernetes $k8s_version schemas"

# --- 4. checkov ---------------------------------------------------------------------------
cp deploy/Dockerfile "$rendered/Dockerfile"
"$bin/checkov" --directory "$rendered" --framework kubernetes dockerfile \
  --skip-download --compact --quiet > "$work/checkov.txt" 2>&1 || {
    cat "$work/checkov.txt"; fail "checkov found failed checks"; }
grep -E 'scan results|Passed checks' "$work/checkov.txt" | paste -sd' ' - | sed 's/^/[deploy-check] checkov: /'

# --- 5. tests -----------------------------------------------------------------------------
TIDEWAY_RENDERED_DIR="$rendered" "$bin/python" -m pytest -q -p no:cacheprovider deploy/tests

# --- 6. Prometheus: the scrape configuration, the rules and their unit tests -------------
command -v promtool >/dev/null || fail "promtool is needed (Debian package prometheus; scripts/deps.sh installs it)"
(cd deploy/prometheus && promtool check config prometheus.yml && promtool check rules rules.yml &&
  promtool test rules tests.yml) || fail "deploy/prometheus does not pass promtool"
log "promtool: deploy/prometheus config, rules and rule tests pass"
