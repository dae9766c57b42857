#!/bin/sh
# Releases the bundled example for real: builds its image locally (FROM scratch, through the
# Docker API; nothing is pulled), then runs a blue-green deploy with the embedded defaults.
# State is kept in examples/demo/.docker-flow.
#
#   ./examples/demo/release.sh        # release v1 (blue)
#   ./examples/demo/release.sh v2     # release v2 into the other colour (green)
#   ./examples/demo/release.sh v2 -F stop-old   # extra docker-flow flags after the version
set -eu
cd "$(dirname "$0")"
version="${1:-v1}"
[ $# -gt 0 ] && shift
cargo build -q -p flow-cli -p flow-tests --bins
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
"$target_dir/debug/demo-image" "docker-flow-demo:$version" "$version"
# The side target runs the v1 image; build it too when releasing another version first.
[ "$version" = v1 ] || "$target_dir/debug/demo-image" docker-flow-demo:v1 v1 >/dev/null
DEMO_TAG="$version" exec "$target_dir/debug/docker-flow" "$@"
