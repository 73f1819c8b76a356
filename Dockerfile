# syntax=docker/dockerfile:1
# Multi-stage build: a static pushd binary on a distroless, non-root base.
# The build stage runs scripts/build.sh, the same build CI runs.
# The Go image sets GOTOOLCHAIN=local, so its Go must be at least go.mod's
# `go` line (1.26.8): a cached golang:1.26 older than that fails. Keep the
# two in step.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN VERSION=${VERSION} scripts/build.sh /out/pushd && /out/pushd version

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pushd /usr/local/bin/pushd
# The config is read from /etc/pushd/pushd.yaml (mount a ConfigMap or volume there).
COPY configs/ /etc/pushd/examples/
USER 65532:65532
EXPOSE 8080 9464
ENTRYPOINT ["/usr/local/bin/pushd"]
CMD ["run", "-c", "/etc/pushd/pushd.yaml"]
