# syntax=docker/dockerfile:1
# purposegate container image: build with the pinned lockfile, ship only the
# binary on distroless (glibc, CA certificates, no shell, no package manager),
# running as the non-root user 65532.
#
#   docker build -t registry.example.com/purposegate:0.1.0 .
#   docker push registry.example.com/purposegate:0.1.0
#   docker run --rm -p 8443:8443 -p 9100:9100 \
#     -v "$PWD/deploy:/etc/purposegate:ro" registry.example.com/purposegate:0.1.0
#
# No public image is published: push to a registry your cluster pulls from
# and name it in the chart (image.repository) or `purposegate inject --image`
# (docs/kubernetes.md).

ARG RUST_VERSION=1.88

FROM rust:${RUST_VERSION}-bookworm AS build
# aws-lc-rs (JWT and TLS crypto) compiles C code: cmake and clang help its build.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the benches (cargo refuses a manifest whose targets are
# missing), and the consent migrations are compiled into the binary.
COPY benches ./benches
COPY migrations ./migrations
COPY examples ./examples
COPY policies ./policies
# Cache mounts keep the registry and the target dir between builds; the
# binary is copied out of the cached target dir into the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin purposegate \
 && cp target/release/purposegate /purposegate

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="purposegate" \
      org.opencontainers.image.description="Purpose-bound access-control reverse proxy for stores of user content" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/purposegate/purposegate"
COPY --from=build /purposegate /purposegate
# The default policy and consent sample, for reference and `policy test`.
COPY --from=build /src/policies /usr/share/purposegate/policies
USER 65532:65532
# proxy (client-facing) and admin (/metrics /healthz /readyz)
EXPOSE 8443 9100
ENTRYPOINT ["/purposegate"]
CMD ["serve", "--config", "/etc/purposegate/config.yaml"]
