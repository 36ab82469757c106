# Braid's container image: built in a full Rust image, run from a slim Debian as a non-root
# user. `docker build -t braid .` from the repository root; deploy/docker-compose.yml builds it.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# librdkafka is built from source by rdkafka-sys: a C toolchain, make and zlib's headers (all in
# this image). scripts/install-deps.sh installs DuckDB's prebuilt library under /opt/braid,
# which the SQL endpoint links.
COPY . .
RUN scripts/install-deps.sh
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin braid \
    && install -D target/release/braid /out/braid

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g libstdc++6 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/braid --create-home braid
COPY --from=build /out/braid /usr/local/bin/braid
COPY --from=build /opt/braid /opt/braid
COPY --from=build /etc/ld.so.conf.d/braid-duckdb.conf /etc/ld.so.conf.d/braid-duckdb.conf
RUN ldconfig
COPY deploy/config/example.toml /etc/braid/braid.toml
USER 10001:10001
WORKDIR /var/lib/braid
VOLUME ["/var/lib/braid"]
EXPOSE 8080
ENTRYPOINT ["braid"]
CMD ["run", "--config", "/etc/braid/braid.toml"]
