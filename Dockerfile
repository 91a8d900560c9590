# syntax=docker/dockerfile:1
# chatworker: a small, non-root image that runs `chatworker run`.
#
#   docker build -t chatworker .
#   docker run --read-only -e CHATWORKER_PUBSUB__SUBSCRIPTION=projects/P/subscriptions/S \
#     -e GOOGLE_APPLICATION_CREDENTIALS=/secrets/key.json -v $PWD/key.json:/secrets/key.json:ro chatworker
#
# The same image runs `chatworker setup` and `chatworker check` (override CMD).
# It listens on nothing unless CHATWORKER_SERVER__LISTEN is set (the
# Kubernetes manifests in deploy/kubernetes set 0.0.0.0:9090).
#
# Only the CLI is built, without its `dev` feature: no `chatworker dev` or
# `chatworker sim`, so no Chat simulator, playground page or discovery
# document in the binary.

# Both bases are pinned by digest (docs/deployment.md, "The image"): the
# build does not change under us when a tag moves. Look the digests up again
# to take the bases' updates.
FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
WORKDIR /src
COPY . .
# The registry and the target directory are BuildKit caches, so a rebuild
# after a source change recompiles only the workspace's own crates.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chatworker-cli --no-default-features \
    && cp target/release/chatworker /usr/local/bin/chatworker

FROM debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
# ca-certificates is left unpinned on purpose: it should follow the base
# image's security updates, and a pinned version breaks the build at the
# next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin chatworker
WORKDIR /app
COPY --from=build /usr/local/bin/chatworker /usr/local/bin/chatworker
# The defaults are compiled in; these copies are the files to override by
# mounting /app/config/default.toml (or use CHATWORKER_* variables).
COPY config /app/config
EXPOSE 9090
USER 10001
# Nothing is written to disk: the image runs with a read-only root filesystem.
ENTRYPOINT ["/usr/local/bin/chatworker"]
CMD ["run"]
