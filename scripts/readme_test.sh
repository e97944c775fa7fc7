#!/usr/bin/env bash
# Runs the README's ```bash blocks as written, in order, in a copy of the
# repository in a temporary directory (so models/, out/ and result.json
# never land in the checkout). Three adaptations, and only these:
#   - `make run` starts the server in the background (and it is stopped at
#     the end) on a free port, which replaces 8815 in the commands;
#   - `make test` is skipped: it is what runs this script;
#   - `make bench`, `make bench-e2e`, `make bench-flight`, `make quality`,
#     `make compare` and `bash bench/...` are skipped: they take minutes to
#     hours, 20+ GB, or a llama.cpp build (see README "Benchmarks").
# Any failing command fails the script, naming the README line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
cleanup() {
	if [ -n "${server_pid:-}" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work" 2>/dev/null || true)
mkdir -p "$work/bin"
[ -x "$root/bin/arrowquant" ] && cp "$root/bin/arrowquant" "$work/bin/"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cd "$work"
lineno=0
inblock=0
while IFS= read -r line; do
	lineno=$((lineno + 1))
	case "$line" in
	'```bash') inblock=1; continue ;;
	'```'*) inblock=0; continue ;;
	esac
	[ $inblock = 1 ] || continue
	cmd="${line%%#*}"                        # drop the comment
	cmd="$(echo "$cmd" | sed -e 's/[[:space:]]*$//')"
	[ -n "$cmd" ] || continue
	cmd="${cmd//8815/$port}"
	case "$cmd" in
	"make test" | "make bench" | "make bench-e2e" | "make bench-flight" | "make quality" | "make compare" | "bash bench/"*)
		echo "README:$lineno: skipped: $cmd"
		continue ;;
	"make run")
		echo "README:$lineno: $cmd (in the background on port $port)"
		make build >/dev/null
		ADDR=127.0.0.1:$port make run >server.log 2>&1 &
		server_pid=$!
		for _ in $(seq 100); do
			if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then break; fi
			sleep 0.2
		done
		continue ;;
	esac
	echo "README:$lineno: $cmd"
	if ! bash -euo pipefail -c "$cmd" >cmd.out 2>&1; then
		cat cmd.out
		echo "README:$lineno failed: $cmd" >&2
		exit 1
	fi
done <"$root/README.md"
echo "README commands passed"
