# klutch-health: a fully static binary on a distroless, non-root base image.
# Build: docker build -t ghcr.io/klutch-health/klutch-health:0.1.0 .   Lint: hadolint Dockerfile (deploy/check.sh)

FROM rust:1.95-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# crt-static on the gnu target links glibc statically: the binary runs on distroless/static or scratch.
# An explicit --target keeps the flag away from build scripts and proc-macros (which must stay dynamic).
ENV RUSTFLAGS="-C target-feature=+crt-static"
# Dependencies in a layer of their own, rebuilt only when a manifest or the lock file changes: the workspace
# manifests with stub sources, built once.
COPY Cargo.toml Cargo.lock ./
COPY sim/Cargo.toml sim/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
RUN mkdir -p src sim/src bench/src/bin \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > sim/src/main.rs && touch sim/src/lib.rs \
 && echo 'fn main() {}' > bench/src/bin/static-server.rs \
 && echo 'fn main() {}' > bench/src/bin/freshness.rs \
 && rustc -vV | sed -n 's/^host: //p' > /target \
 && cargo build --release --locked --bin klutch-health --target "$(cat /target)"
# The real sources; touching the stubs' paths makes cargo rebuild the crate (COPY keeps older mtimes).
COPY src src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin klutch-health --target "$(cat /target)" \
 && cp "target/$(cat /target)/release/klutch-health" /klutch-health

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /klutch-health /usr/local/bin/klutch-health
COPY config.toml /etc/klutch-health/config.toml
# 65532 is distroless' nonroot user; the Kubernetes manifests set the same runAsUser.
USER 65532:65532
# The config path is the image's default, not part of its command line: Kubernetes appends a container's
# `args` to the ENTRYPOINT, so manifests pass only what differs (tests/full/container.rs runs that combination).
ENV KLUTCH_HEALTH_CONFIG=/etc/klutch-health/config.toml
# 8080: the main listener; 8081: the public one (server.public_listen in the shipped manifests).
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/klutch-health"]
