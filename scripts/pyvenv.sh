# Sourced by scripts/venv.sh and scripts/llamacpp.sh: make_venv DIR PYTHON
# creates the virtualenv DIR with pip, without touching the system
# interpreter: works where the distro's Python has no ensurepip (Debian
# without python3-venv) and no pip (PEP 668 "externally managed"), by
# bootstrapping pip from its wheel on PyPI.
make_venv() {
	local venv=$1 python=$2
	local py="$venv/bin/python"
	if [ ! -x "$py" ]; then
		"$python" -m venv "$venv" >/dev/null 2>&1 || "$python" -m venv --without-pip "$venv" >&2
	fi
	if ! "$py" -m pip --version >/dev/null 2>&1; then
		echo "venv: no pip in $venv; bootstrapping it from its wheel on PyPI" >&2
		local whl
		whl=$("$py" - "$venv" <<'PYEOF'
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
		"$py" "$whl/pip" install --quiet --no-index "$whl" >&2
		rm -f "$whl"
	fi
}
