# syntax=docker/dockerfile:1
# arrowquant: a static binary on a distroless, non-root base.
#   docker build -t arrowquant:dev --build-arg COMMIT=$(git rev-parse --short=12 HEAD) .
#   docker run --rm -p 8815:8815 -p 9464:9464 arrowquant:dev        (local store in /data)
# docs/DEPLOY.md runs it on Kubernetes with an S3 store.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/arrowquant ./cmd/arrowquant \
 && mkdir -p /out/data /out/scratch && mkdir -m 1777 /out/tmp

# static-debian12 has CA certificates (for AWS S3 over HTTPS), tzdata and
# /etc/passwd with the nonroot user (65532); no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/arrowquant /usr/local/bin/arrowquant
COPY --from=build --chown=65532:65532 /out/data /data
COPY --from=build --chown=65532:65532 /out/scratch /scratch
# Request calibration files go to the temporary directory.
COPY --from=build /out/tmp /tmp
USER 65532:65532
# Flight (gRPC) and Prometheus /metrics + /healthz.
EXPOSE 8815 9464
ENTRYPOINT ["/usr/local/bin/arrowquant"]
CMD ["serve", "--addr", "0.0.0.0:8815", "--metrics-addr", "0.0.0.0:9464", "--data", "/data", "--scratch-dir", "/scratch", "--log-level", "info", "--log-format", "json"]
