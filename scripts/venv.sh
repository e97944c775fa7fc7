#!/usr/bin/env bash
# Creates (or refreshes) the project-local virtualenv .venv with the Python
# package and its test dependencies, without touching the system
# interpreter (scripts/pyvenv.sh). Prints the venv's python.
#   VENV=.venv PYTHON=python3 bash scripts/venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pyvenv.sh
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
PY="$VENV/bin/python"
stamp="$VENV/.arrowquant-deps"
want=$(cat python/pyproject.toml python/test-requirements.txt | sha256sum | cut -c1-16)
if [ -x "$PY" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
	echo "$PY"
	exit 0
fi
make_venv "$VENV" "$PYTHON"
"$PY" -m pip install --quiet --disable-pip-version-check -r python/test-requirements.txt >&2
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps ./python >&2
echo "$want" >"$stamp"
echo "$PY"
