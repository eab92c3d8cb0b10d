# The image `host package` builds, for those who build with Docker.
#
# Not built or tested in this repository: its machines have no Docker
# daemon. `host package` builds the same layout without one (README,
# "Packaging an image"), and host/tests/package.rs checks that image with
# skopeo and umoci and runs it.
#
#   docker build -t shoal-functions .                      # examples/shoal.toml
#   docker build --build-arg MANIFEST=path/to/shoal.toml -t my-functions .
#   docker build --build-arg CPU=portable -t shoal-functions .   # any x86-64 node
#
# The manifest's components must be in the build context, or built below
# (as the examples are).

FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends umoci python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN rustup target add wasm32-wasip2 \
    && cargo build --release --locked -p shoal-host \
    && cargo build --release --locked --target wasm32-wasip2 \
        --manifest-path examples/Cargo.toml --target-dir target/examples \
    && scripts/build-polyglot api-js api-py api-c api-go
ARG MANIFEST=examples/shoal.toml
# `host package` compiles the components for this machine's CPU (a node
# with another CPU logs that and compiles them itself at start), or for
# x86-64-v2 with CPU=portable (then used on any node).
ARG CPU=native
RUN target/release/host package "$MANIFEST" --cpu "$CPU" --out /image \
    && umoci unpack --rootless --image /image:latest /bundle

# The C runtime (glibc, libgcc) the host links, from the same Debian
# release it was built on; user 65532 is its `nonroot`; /tmp is 1777.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /bundle/rootfs/shoal /shoal
ARG CPU=native
ENV PORT=8080 \
    SHOAL_PRECOMPILED=/shoal/artifacts \
    SHOAL_DATA_DIR=/tmp/shoal \
    SHOAL_CPU=$CPU
USER 65532:65532
WORKDIR /
EXPOSE 8080/tcp
LABEL org.opencontainers.image.title="shoal-functions" \
      org.opencontainers.image.description="Shoal host serving a manifest's WebAssembly functions"
ENTRYPOINT ["/shoal/bin/host", "run", "/shoal/shoal.toml"]
