# syntax=docker/dockerfile:1
#
# canary-notifier container image. This repository's own CI has no container engine,
# so this file is not built there; .github/workflows/e2e.yml builds and runs it on kind.
#   docker build -t ghcr.io/canary-notifier/canary-notifier:0.1.0 .

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src

# Dependencies first, against placeholder sources, so that this layer is reused
# until Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

COPY src ./src
# Make sure cargo rebuilds the crate itself, not just the placeholders.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin canary-notifier \
 && cp target/release/canary-notifier /canary-notifier

# Distroless: glibc, CA certificates, no shell. The Deployment's preStop therefore
# uses the built-in sleep action.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="canary-notifier" \
      org.opencontainers.image.description="Admission checks and notifications for Flagger canaries" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /canary-notifier /canary-notifier
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/canary-notifier"]
CMD ["serve"]
