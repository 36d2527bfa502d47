#!/usr/bin/env bash
# Chart tests without a cluster: lints and renders helm/sluice with Helm's Go SDK and validates
# every manifest against the Kubernetes schemas. Installs the Python packages when missing;
# quiet when everything passes. Extra arguments go to pytest (e.g. -k storage).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
PACKAGES=("helm-python-sdk>=0.2.2,<0.3" "kubernetes-validate>=1.30" "pytest" "pyyaml")

if ! "$PY" -c 'import helm_python, kubernetes_validate, pytest, yaml' >/dev/null 2>&1; then
  echo "installing the chart-test packages (helm-python-sdk, kubernetes-validate, pytest, pyyaml)" >&2
  # An externally managed Python (Debian's) refuses plain installs; fall back like scripts/lib.sh.
  "$PY" -m pip install -q --disable-pip-version-check "${PACKAGES[@]}" >/dev/null 2>&1 \
    || "$PY" -m pip install -q --disable-pip-version-check --break-system-packages "${PACKAGES[@]}" >/dev/null
fi

# No .pytest_cache or __pycache__ left in the source tree.
export PYTHONDONTWRITEBYTECODE=1
exec "$PY" -m pytest -q -p no:cacheprovider "$HERE/test_chart.py" "$@"
