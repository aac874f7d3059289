# syntax=docker/dockerfile:1
# The module controller: runs in the cluster with the koupleless-controller ServiceAccount
# (deploy/controller). Ports: 7777 HTTP tunnel, 8081 probes, 9090 metrics, 10250 kubelet API.
#
# Build from the repository root (the whole workspace is the build context; Cargo.lock pins
# every dependency):
#   docker build -f deploy/images/controller.Dockerfile -t koupleless/koupleless-controller:0.1.0 .

# Build stage: the workspace's toolchain (rust-version in Cargo.toml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p koupleless-controller --bin koupleless-controller \
    && strip target/release/koupleless-controller

# Runtime: distroless with glibc and libgcc only (no shell, no package manager), as the
# image's non-root user (65532, "nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/koupleless-controller /usr/local/bin/koupleless-controller
USER 65532:65532
EXPOSE 7777 8081 9090 10250
ENTRYPOINT ["/usr/local/bin/koupleless-controller"]
