# syntax=docker/dockerfile:1
# Multi-stage build: a Rust builder, then a slim runtime with CA certificates and a non-root user.
# reqwest uses rustls (no OpenSSL) and SQLite is bundled, so the binary needs only libc (and libgcc_s).
# deploy/README.md tells how to run it (Docker, Kubernetes, systemd); .ci/deploy-check lints this file and
# checks that the build stage copies everything `cargo build` reads.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# What the build reads: the workspace manifest and lock file, the build script (it embeds the commit,
# and makes cargo rebuild when a migration changes), the sources and the migrations (sqlx::migrate!).
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY migrations ./migrations
# The workspace's other crate: the simulator, which the default command (the demo) runs against.
COPY sim ./sim
# The commit `miaudit --version` and miaudit_build_info report (build.rs; the build context has no .git):
#   docker build --build-arg MIAUDIT_GIT_COMMIT="$(git rev-parse --short=12 HEAD)" -t miaudit .
# Without it they say "unknown".
ARG MIAUDIT_GIT_COMMIT
# --locked: the versions of Cargo.lock, or fail. The cache mounts keep the crates downloaded between
# builds (BuildKit); the binary itself lands in the image layer, at target/release/miaudit.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    cargo build --release --locked

FROM debian:bookworm-slim
ARG MIAUDIT_GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="miaudit" \
      org.opencontainers.image.description="Finds orphaned managed identities in Microsoft Entra ID tenants" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/miaudit/miaudit" \
      org.opencontainers.image.revision="${MIAUDIT_GIT_COMMIT}"
# ca-certificates: the roots rustls verifies Azure's certificates against (the system store).
# sqlite3: the command-line shell, for backups without stopping the daemon
# (`sqlite3 /var/lib/miaudit/miaudit.db ".backup /var/lib/miaudit/backup.db"`, deploy/README.md).
# Versions are not pinned: Debian stable replaces a package in place for a security fix and drops the
# old version from its archive, so a pinned version breaks the build at the next fix; the base image's
# tag (bookworm) fixes the release, and each rebuild takes its security fixes.
# The user is numeric and fixed (10001) so that Kubernetes can check runAsNonRoot and a volume can be
# chowned to it; /var/lib/miaudit (the database) is its only writable directory, mode 0700.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates sqlite3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 miaudit \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/miaudit --no-create-home \
      --shell /usr/sbin/nologin miaudit \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/miaudit
COPY --from=build /src/target/release/miaudit /usr/local/bin/miaudit
# The documented example configuration, for reference; mount your own miaudit.toml over it.
COPY config/ /etc/miaudit/
USER 10001:10001
WORKDIR /var/lib/miaudit
VOLUME ["/var/lib/miaudit"]
# Configuration by environment: MIAUDIT_<SECTION>__<KEY> overrides the file's key (or the default).
# - The database on the volume.
# - The API on all interfaces of the container (a loopback address is unreachable from outside it); the
#   health check reads the same variable and asks 127.0.0.1.
# - TMPDIR on the volume too, so the image runs with a read-only root file system (docker run
#   --read-only; Kubernetes readOnlyRootFilesystem) with no other mount: `miaudit demo` keeps its
#   database under $TMPDIR, and SQLite its temporary files (a VACUUM's copy of the database among them).
ENV MIAUDIT_DATABASE__URL=sqlite:///var/lib/miaudit/miaudit.db \
    MIAUDIT_HTTP__LISTEN=0.0.0.0:9464 \
    TMPDIR=/var/lib/miaudit
EXPOSE 9464
# GET /healthz on the listen address above: exit 0 on 200, 1 otherwise (slim images have no curl).
# Kubernetes ignores it and uses the Deployment's probes (deploy/kubernetes).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/miaudit", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/miaudit"]
# Without configuration the image runs the demo daemon against the built-in simulated tenant, listening
# on all interfaces of the container: docker run -p 9464:9464 miaudit
# For a real tenant the API listens on all interfaces of the container, so make its reads need the token
# (every GET under /api/v1/ then needs "Authorization: Bearer <token>"; /healthz and /readyz stay open;
# add -e MIAUDIT_HTTP__METRICS_REQUIRE_TOKEN=true to guard /metrics as well):
# The database (findings, tickets, history) lives on a volume so it survives the container; secrets come
# from an env file (or client_secret_file on a mounted secret), not the command line:
#   docker run -p 9464:9464 -v miaudit-data:/var/lib/miaudit --read-only \
#     -v /path/miaudit.toml:/etc/miaudit/miaudit.toml:ro --env-file /path/miaudit.env \
#     -e MIAUDIT_HTTP__REQUIRE_TOKEN_FOR_READS=true \
#     miaudit --config /etc/miaudit/miaudit.toml serve
#   (miaudit.env: AZURE_CLIENT_SECRET=... and MIAUDIT_HTTP__API_TOKEN=...)
# Without the token requirement `serve` logs a warning at start-up that anyone who can reach it reads every finding.
CMD ["demo", "--listen", "0.0.0.0:9464"]
