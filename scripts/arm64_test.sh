#!/usr/bin/env bash
# Runs the kernel tests and quant's short tests as arm64 binaries under
# qemu user-mode emulation, twice: the NEON build and the pure-Go build
# (-tags purego). Installs Debian's qemu-user-static with apt-get when
# qemu-aarch64-static is missing (CI runs as root with Debian's mirrors).
set -euo pipefail
cd "$(dirname "$0")/.."

QEMU=${QEMU:-qemu-aarch64-static}
if ! command -v "$QEMU" >/dev/null 2>&1; then
	echo "arm64_test: $QEMU missing; installing Debian's qemu-user-static (apt-get)"
	if [ "$(id -u)" != 0 ]; then
		echo "arm64_test: need root to install qemu-user-static" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq qemu-user-static >/dev/null
fi

PKGS=${ARM64_PKGS:-"./kernels/... ./internal/fp ./quant"}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
start=$(date +%s)
fail=0
for tags in "" purego; do
	label=${tags:-neon}
	for pkg in $(go list $PKGS); do
		name=$(echo "$pkg" | tr '/.' '__')
		bin="$out/$name.$label.test"
		GOARCH=arm64 CGO_ENABLED=0 go test -c -tags "$tags" -o "$bin" "$pkg"
		[ -f "$bin" ] || continue # no test files
		dir=$(go list -f '{{.Dir}}' "$pkg")
		if (cd "$dir" && "$QEMU" "$bin" -test.short -test.count=1 >"$out/log" 2>&1); then
			echo "ok    arm64 ($label) $pkg"
		else
			echo "FAIL  arm64 ($label) $pkg"
			cat "$out/log"
			fail=1
		fi
	done
done
echo "arm64_test: $(( $(date +%s) - start ))s"
exit $fail
