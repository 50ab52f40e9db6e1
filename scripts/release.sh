#!/usr/bin/env bash
# Builds static switchboard binaries (CGO_ENABLED=0, -trimpath) with the version stamped in, and SHA256SUMS.
#
#   scripts/release.sh                          every target below, into dist/
#   TARGETS="linux/amd64 darwin/arm64" scripts/release.sh
#   VERSION=v1.2.0 OUT=/tmp/out scripts/release.sh
#
# VERSION defaults to the tag at HEAD when the tree is clean, else devel+<12-hex revision>[-dirty] (what
# `switchboard --version` prints); REVISION to the full revision. Without git (a container build from a source
# archive) pass them in. Files: $OUT/switchboard_<version>_<os>_<arch>[.exe] and $OUT/SHA256SUMS.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS="${TARGETS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64}"
OUT="${OUT:-dist}"

if [ -z "${VERSION:-}" ]; then
  if tag=$(git describe --tags --exact-match HEAD 2>/dev/null) && git diff --quiet HEAD 2>/dev/null; then
    VERSION="$tag"
  elif rev=$(git rev-parse --short=12 HEAD 2>/dev/null); then
    VERSION="devel+$rev"
    git diff --quiet HEAD 2>/dev/null || VERSION="$VERSION-dirty"
  else
    VERSION=devel
  fi
fi
REVISION="${REVISION:-$(git rev-parse HEAD 2>/dev/null || true)}"
case "$VERSION" in
  *[!A-Za-z0-9.+_-]*) echo "release.sh: VERSION '$VERSION' may hold only letters, digits and . + _ -" >&2; exit 2 ;;
esac

pkg=github.com/switchboard-relay/switchboard/internal/version
ldflags="-s -w -X $pkg.tag=$VERSION -X $pkg.revision=$REVISION"
mkdir -p "$OUT"
files=()
for target in $TARGETS; do
  os="${target%/*}" arch="${target#*/}"
  name="switchboard_${VERSION}_${os}_${arch}"
  [ "$os" = windows ] && name="$name.exe"
  echo "build $target → $OUT/$name"
  CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$OUT/$name" ./cmd/switchboard
  files+=("$name")
done
(cd "$OUT" && sha256sum "${files[@]}" > SHA256SUMS)
echo "version $VERSION; checksums in $OUT/SHA256SUMS"
