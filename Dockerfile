# syntax=docker/dockerfile:1
# One image for every Sluice role: the command picks it.
#   docker build -t sluice:0.1.0 .
#   docker run --rm sluice:0.1.0 sluice-coordinator --help
#   docker run --rm sluice:0.1.0 sluice-storage-node --help
#   docker run --rm -it sluice:0.1.0 sluice --help
# The Helm chart (helm/sluice) runs it as uid 10001 with a read-only root filesystem; storage
# nodes keep their data under /data (a PersistentVolume in Kubernetes).

FROM rust:1.95-bookworm AS builder
# protoc for the .proto files (ours and etcd-client's), libclang for RocksDB's bindings.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      protobuf-compiler libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target dir (RocksDB's C++ build is the slow part)
# between builds; the binaries are copied out because the target dir is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
      -p sluice -p sluice-coordinator -p sluice-storage-node \
 && mkdir -p /out \
 && cp target/release/sluice target/release/sluice-coordinator target/release/sluice-storage-node /out/

FROM debian:bookworm-slim
# RocksDB is linked statically but needs the C++ runtime (libstdc++6); ca-certificates for
# TLS endpoints (e.g. an external etcd over https).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin sluice \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=builder /out/sluice /out/sluice-coordinator /out/sluice-storage-node /usr/local/bin/
USER 10001:10001
WORKDIR /data
# 9092 coordinator gRPC, 9093 storage-node gRPC, 9100 Prometheus metrics.
EXPOSE 9092 9093 9100
# No ENTRYPOINT: the command is the role (sluice-coordinator, sluice-storage-node or sluice).
CMD ["sluice", "--help"]
