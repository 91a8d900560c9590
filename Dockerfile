# chatworker: a small, non-root image that runs `chatworker run`.
#
#   docker build -t chatworker .
#   docker run --read-only -e CHATWORKER_PUBSUB__SUBSCRIPTION=projects/P/subscriptions/S \
#     -e GOOGLE_APPLICATION_CREDENTIALS=/secrets/key.json -v $PWD/key.json:/secrets/key.json:ro chatworker
#
# The same image runs `chatworker setup` and `chatworker check` (override CMD).
# It listens on nothing unless CHATWORKER_SERVER__LISTEN is set (the
# Kubernetes manifests in deploy/kubernetes set 0.0.0.0:9090).

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in a layer of their own: it is rebuilt only when
# Cargo.toml or Cargo.lock change.
# Cargo.toml names tests/faults.rs, so a stub stands in for it too.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src tests \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > tests/faults.rs \
    && cargo build --release --locked --bin chatworker \
    && rm -rf src
COPY src src
COPY config config
COPY reference reference
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin chatworker

FROM debian:bookworm-slim
# ca-certificates is left unpinned on purpose: it should follow the base
# image's security updates, and a pinned version breaks the build at the
# next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin chatworker
WORKDIR /app
COPY --from=build /src/target/release/chatworker /usr/local/bin/chatworker
# The defaults are compiled in; this copy is the file to override by mounting
# /app/config/default.toml (or use CHATWORKER_* variables).
COPY config /app/config
EXPOSE 9090
USER 10001
# Nothing is written to disk: the image runs with a read-only root filesystem.
ENTRYPOINT ["/usr/local/bin/chatworker"]
CMD ["run"]
