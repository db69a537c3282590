# syntax=docker/dockerfile:1
# Multi-stage build: a full Rust toolchain builds the release binary; the runtime
# image is Debian slim with the binary only, running as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY client ./client
COPY lua ./lua
COPY examples ./examples
RUN cargo build --release --locked --bin cooplocker \
 && strip target/release/cooplocker

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin cooplocker
COPY --from=build /src/target/release/cooplocker /usr/local/bin/cooplocker
USER 10001:10001
ENV COOPLOCKER_LISTEN=0.0.0.0:8080
EXPOSE 8080
# The binary checks itself: GET /healthz on the local listener.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["cooplocker", "healthcheck"]
ENTRYPOINT ["cooplocker"]
CMD ["serve"]
