# klutch-health: a static binary on a distroless, non-root base image.
# Build: docker build -t klutch-health .

FROM rust:1.95-bookworm AS build
WORKDIR /src
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    TARGET=x86_64-unknown-linux-gnu
# Dependencies in a layer of their own: it is rebuilt only when a manifest or the lock file changes.
COPY Cargo.toml Cargo.lock ./
COPY sim/Cargo.toml sim/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
RUN mkdir -p src sim/src bench/src/bin \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > sim/src/main.rs && touch sim/src/lib.rs \
 && echo 'fn main() {}' > bench/src/bin/static-server.rs && echo 'fn main() {}' > bench/src/bin/freshness.rs \
 && cargo build --release --locked --bin klutch-health --target "$TARGET"
COPY src src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin klutch-health --target "$TARGET" \
 && cp "target/$TARGET/release/klutch-health" /klutch-health

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /klutch-health /usr/local/bin/klutch-health
COPY config.toml /etc/klutch-health/config.toml
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/klutch-health", "--config", "/etc/klutch-health/config.toml"]
