# A Rust build image made from a local Debian base, for machines that reach
# Debian's archive and static.rust-lang.org but no image registry
# (scripts/container builds it; see the README's "Running in production").
ARG BASE=localhost/pumphouse/debian:bookworm
FROM ${BASE}
ARG RUST=1.95.0
# Extra certificate authorities of the build machine (a TLS-inspecting
# proxy's, say), trusted for the downloads below and cargo's.
COPY ca/ /usr/local/share/ca-certificates/
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      ca-certificates curl gcc libc6-dev make \
 && rm -rf /var/lib/apt/lists/* \
 && update-ca-certificates
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN curl -sSf https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init -o /tmp/rustup-init \
 && chmod +x /tmp/rustup-init \
 && /tmp/rustup-init -y --no-modify-path --profile minimal --default-toolchain ${RUST} --target wasm32-wasip2 \
 && rm /tmp/rustup-init
