# Multi-stage build of the depthbook binaries into a small non-root image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ingest \
 && strip target/release/ingest

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home depthbook
COPY --from=build /src/target/release/ingest /usr/local/bin/ingest
USER depthbook
ENTRYPOINT ["ingest"]
