#!/usr/bin/env bash
# Runs the s3 backend's tests and the fleet e2e against a real S3 engine: SeaweedFS (`weed
# mini`) on loopback in a temp dir, stopped on exit. Used by `make test-s3`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/clowder-s3-XXXXXX)
trap 'bash "$here/seaweedfs-sandbox.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
bash "$here/seaweedfs-sandbox.sh" start "$dir" >/dev/null
export CLOWDER_S3_ENDPOINT=$(cat "$dir/endpoint")
export CLOWDER_S3_ACCESS_KEY=${S3_ACCESS_KEY:-clowder} CLOWDER_S3_SECRET_KEY=${S3_SECRET_KEY:-clowder-secret}
echo "s3: SeaweedFS at $CLOWDER_S3_ENDPOINT"
filter() { grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)'; }
${GO:-go} test -race -count=1 -timeout 10m -v ./internal/testutil/s3test/ ./cas/s3store/ 2>&1 | filter
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || exit "$rc"
# clowder serve on the bucket through an outage (every request answered 503).
${GO:-go} test -count=1 -timeout 5m -v -run 'TestS3' ./cmd/clowder/ 2>&1 | filter
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || exit "$rc"
# The server's protocol suite (OCI, ollama, Hugging Face, fills, tiers,
# security) on the s3 backend instead of the local layout.
CLOWDER_TEST_STORE=s3 ${GO:-go} test -race -count=1 -timeout 10m ./server/ 2>&1 | tail -n 30
# The fleet: clowder processes on one bucket, real registry upstream.
CLOWDER_E2E=1 ${GO:-go} test -count=1 -timeout 10m -v -run 'TestFleet' ./e2e/ 2>&1 | tee .fleet.log | filter
exit "${PIPESTATUS[0]}"
