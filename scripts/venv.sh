#!/usr/bin/env bash
# Creates (or refreshes) the project-local virtualenv .venv with the Python
# package and its test dependencies, without touching the system
# interpreter: works where the distro's Python has no ensurepip (Debian
# without python3-venv) and no pip (PEP 668 "externally managed"), by
# bootstrapping pip from its wheel on PyPI. Prints the venv's python.
#   VENV=.venv PYTHON=python3 bash scripts/venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
PY="$VENV/bin/python"
stamp="$VENV/.arrowquant-deps"
want=$(cat python/pyproject.toml python/test-requirements.txt | sha256sum | cut -c1-16)
if [ -x "$PY" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
	echo "$PY"
	exit 0
fi
if [ ! -x "$PY" ]; then
	"$PYTHON" -m venv "$VENV" >/dev/null 2>&1 || "$PYTHON" -m venv --without-pip "$VENV" >&2
fi
if ! "$PY" -m pip --version >/dev/null 2>&1; then
	echo "venv: no pip in $VENV; bootstrapping it from its wheel on PyPI" >&2
	whl=$("$PY" - "$VENV" <<'PYEOF'
import json, sys, urllib.parse, urllib.request, os
resp = urllib.request.urlopen("https://pypi.org/pypi/pip/json", timeout=60)
meta = json.load(resp)
url = next(f["url"] for f in meta["urls"] if f["filename"].endswith(".whl"))
url = urllib.parse.urljoin(resp.geturl(), url)  # mirrors answer with relative links
dst = os.path.join(sys.argv[1], os.path.basename(url))
urllib.request.urlretrieve(url, dst)
print(dst)
PYEOF
)
	"$PY" "$whl/pip" install --quiet --no-index "$whl" >&2
	rm -f "$whl"
fi
"$PY" -m pip install --quiet --disable-pip-version-check -r python/test-requirements.txt >&2
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps ./python >&2
echo "$want" >"$stamp"
echo "$PY"
