# Nexus Routines: one image with every binary (nexus, nexus-api, nexus-scheduler, nexus-worker).
# Build:  docker build -t nexus-routines .
# The default command runs all roles in one process; deployments pick a role binary instead.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Queries are checked against the committed .sqlx/ data: no database is needed to build.
ENV SQLX_OFFLINE=true
COPY . .
RUN cargo build --release --locked \
        --bin nexus --bin nexus-api --bin nexus-scheduler --bin nexus-worker \
    && mkdir /out \
    && cp target/release/nexus target/release/nexus-api target/release/nexus-scheduler \
          target/release/nexus-worker /out/

FROM debian:bookworm-slim
# ca-certificates: HTTPS wake-ups to agents; curl: container health checks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/nexus --create-home nexus
COPY --from=build /out/ /usr/local/bin/
USER 10001
WORKDIR /var/lib/nexus
ENV NEXUS_LISTEN=0.0.0.0:8080 \
    NEXUS_DATA_DIR=/var/lib/nexus \
    NEXUS_LOG_FORMAT=json
# The single-process mode's data (embedded database, generated key) when no database URL is set.
VOLUME /var/lib/nexus
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
CMD ["nexus", "serve"]
