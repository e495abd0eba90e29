# syntax=docker/dockerfile:1
# Multi-arch plugin image: docker buildx build --platform linux/amd64,linux/arm64 .
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS=linux
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w" -o /out/velero-plugin-for-etcd . \
 && CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w" -o /out/copy-plugin ./cmd/copy-plugin

# `velero plugin add` runs this image as an init container with no command and
# an emptyDir at /target; the entrypoint copies the plugin binary there.
FROM scratch
COPY --from=build /out/velero-plugin-for-etcd /plugins/velero-plugin-for-etcd
COPY --from=build /out/copy-plugin /bin/copy-plugin
USER 65532:65532
ENTRYPOINT ["/bin/copy-plugin", "/plugins/velero-plugin-for-etcd", "/target"]
