# mkio-relay container: a static-ish release binary on a slim Debian base, non-root, data on
# the /data volume, configured through MKIO_RELAY_* environment variables.

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
# .cargo/config.toml builds the bundled SQLite with fdatasync (see the comment there).
COPY .cargo .cargo
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin mkio-relay \
    && rm -rf src
COPY build.rs ./
COPY src src
COPY migrations migrations
COPY config config
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin mkio-relay

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home relay \
    && mkdir -p /data && chown relay:relay /data
COPY --from=build /src/target/release/mkio-relay /usr/local/bin/mkio-relay
USER relay:relay
WORKDIR /data
ENV MKIO_RELAY_DATABASE_URL=sqlite:/data/mkio-relay.db \
    MKIO_RELAY_INGEST_LISTEN=0.0.0.0:8080 \
    MKIO_RELAY_API_LISTEN=0.0.0.0:8081 \
    MKIO_RELAY_LOG_FORMAT=json \
    MKIO_RELAY_SHUTDOWN_GRACE=8s
VOLUME ["/data"]
# 8080: MK.IO webhooks (publish this one). 8081: the local API (keep it on the private network;
# set MKIO_RELAY_API_TOKEN).
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["mkio-relay", "healthcheck"]
# SIGTERM drains: in-flight ingests commit, streams close. The grace (8s) ends before
# `docker stop`'s default 10 s; raise both together (docker stop -t, stop_grace_period,
# terminationGracePeriodSeconds) for slow receivers.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mkio-relay"]
CMD ["serve"]
