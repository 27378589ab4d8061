#!/usr/bin/env bash
# Runs the s3 backend's tests against a real S3 engine: SeaweedFS (`weed
# mini`) on loopback in a temp dir, stopped on exit. Used by `make test-s3`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/clowder-s3-XXXXXX)
trap 'bash "$here/seaweedfs-sandbox.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
bash "$here/seaweedfs-sandbox.sh" start "$dir" >/dev/null
export CLOWDER_S3_ENDPOINT=$(cat "$dir/endpoint")
export CLOWDER_S3_ACCESS_KEY=${S3_ACCESS_KEY:-clowder} CLOWDER_S3_SECRET_KEY=${S3_SECRET_KEY:-clowder-secret}
echo "s3: SeaweedFS at $CLOWDER_S3_ENDPOINT"
${GO:-go} test -race -count=1 -timeout 10m -v ./cas/s3store/ 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)'
exit "${PIPESTATUS[0]}"
