# syntax=docker/dockerfile:1
# Multi-stage build: a Rust builder, then a slim runtime with CA certificates and a non-root user.
# reqwest uses rustls (no OpenSSL) and SQLite is bundled, so the binary needs only libc.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY migrations ./migrations
# The workspace's other crate: the simulator, which the default command (the demo) runs against.
COPY sim ./sim
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/miaudit --create-home miaudit
COPY --from=build /src/target/release/miaudit /usr/local/bin/miaudit
COPY config/ /etc/miaudit/
USER miaudit
WORKDIR /var/lib/miaudit
VOLUME ["/var/lib/miaudit"]
ENV MIAUDIT_DATABASE__URL=sqlite:///var/lib/miaudit/miaudit.db
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/miaudit"]
# Without configuration the image runs the demo daemon against the built-in simulated tenant, listening
# on all interfaces of the container: docker run -p 9464:9464 miaudit
# For a real tenant the API listens on all interfaces of the container, so make its reads need the token
# (every GET under /api/v1/ then needs "Authorization: Bearer <token>"; /healthz and /readyz stay open;
# add -e MIAUDIT_HTTP__METRICS_REQUIRE_TOKEN=true to guard /metrics as well):
# The database (findings, tickets, history) lives on a volume so it survives the container; secrets come
# from an env file (or client_secret_file on a mounted secret), not the command line:
#   docker run -p 9464:9464 -v miaudit-data:/var/lib/miaudit \
#     -v /path/miaudit.toml:/etc/miaudit/miaudit.toml:ro --env-file /path/miaudit.env \
#     -e MIAUDIT_HTTP__LISTEN=0.0.0.0:9464 -e MIAUDIT_HTTP__REQUIRE_TOKEN_FOR_READS=true \
#     miaudit --config /etc/miaudit/miaudit.toml serve
#   (miaudit.env: AZURE_CLIENT_SECRET=... and MIAUDIT_HTTP__API_TOKEN=...)
# Without the token requirement `serve` logs a warning at start-up that anyone who can reach it reads every finding.
CMD ["demo", "--listen", "0.0.0.0:9464"]
