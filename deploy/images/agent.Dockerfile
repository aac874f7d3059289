# syntax=docker/dockerfile:1
# The agent: a sidecar beside a Java base (deploy/agent/base-with-agent.yaml). It runs as the
# base JVM's uid/gid, set by the Pod (runAsUser/runAsGroup), to read the JVM's hsperfdata and
# attach socket; the image's default user only applies when the Pod sets none. Port: 1238 Arklet
# API. The image has no JDK: use the ark-telnet or arklet backend (the process backend needs
# a java binary beside it).
#
# Build from the repository root (the whole workspace is the build context; Cargo.lock pins
# every dependency):
#   docker build -f deploy/images/agent.Dockerfile -t koupleless/koupleless-agent:0.1.0 .

# Build stage: the workspace's toolchain (rust-version in Cargo.toml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p koupleless-agent --bin koupleless-agent \
    && strip target/release/koupleless-agent

# Runtime: distroless with glibc and libgcc only (no shell, no package manager), as the
# image's non-root user (65532, "nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/koupleless-agent /usr/local/bin/koupleless-agent
USER 65532:65532
EXPOSE 1238
ENTRYPOINT ["/usr/local/bin/koupleless-agent"]
