# syntax=docker/dockerfile:1
# The switchboard image: a static binary built by scripts/release.sh (CGO_ENABLED=0, version stamped) on a
# distroless base, running as a non-root user. docs/deploy.md has the commands.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg REVISION=$(git rev-parse HEAD) -t switchboard .
#   docker run --rm -p 8080:8080 -e SWITCHBOARD_SECRET=... switchboard serve

FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=
ARG REVISION=
RUN TARGETS="$TARGETOS/$TARGETARCH" OUT=/out VERSION="$VERSION" REVISION="$REVISION" scripts/release.sh \
    && cp /out/switchboard_*_"$TARGETOS"_"$TARGETARCH" /switchboard

# Nothing but the binary, CA roots (for JWKS, webhooks, https relays) and /etc/passwd with "nonroot".
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /switchboard /switchboard
USER 65532:65532
# In a container the relay listens on every address; the metrics listener stays a separate port to keep private.
ENV SWITCHBOARD_LISTEN=:8080 \
    SWITCHBOARD_METRICS_LISTEN=:9090
EXPOSE 8080 9090
ENTRYPOINT ["/switchboard"]
CMD ["serve"]
