# Multi-stage build: the depthbook binaries (ingest, graphql, sim) in one small non-root image;
# each service picks its binary with `command`/`entrypoint`.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ingest -p graphql -p sim \
 && strip target/release/ingest target/release/graphql target/release/sim

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/depthbook --create-home depthbook
COPY --from=build /src/target/release/ingest /src/target/release/graphql /src/target/release/sim /usr/local/bin/
USER depthbook
WORKDIR /var/lib/depthbook
ENTRYPOINT ["ingest"]
