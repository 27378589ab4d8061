#!/usr/bin/env bash
# Run the OCI distribution-spec conformance suite against a clowder binary.
#
#   hack/conformance.sh            (make conformance builds what it needs first)
#
# Runs, against one `clowder serve` on loopback:
#   hosted        the suite's default configuration (spec 1.1: every API it
#                 enables by default, every data set incl. sha512) on the
#                 hosted prefix: OCI_REPO1=local/conformance/repo1, REPO2=.../repo2
#   hosted-dev    the same with OCI_VERSION=dev (adds upload cancel, ?tag=
#                 parameters, required Docker-Content-Digest headers)
#   proxy-cold    pull checks only, on a namespace proxied from a CNCF
#   proxy-warm    distribution registry (upstream "cncf"), cold then from cache
# Every run must report zero failures and zero errors.
#
# The suite's pull workflow seeds itself by pushing; a pull-through cache
# cannot be pushed to, so the proxied runs use the suite's read-only mode
# (OCI_API_PUSH=false + OCI_RO_DATA_*): the upstream registry is seeded with
# crane (an image and an index) and oras (a referrer) first.
#
# Env: CLOWDER_BIN, CONFORMANCE, REGISTRY, CRANE, ORAS (tools.mk exports
# them); CONFORMANCE_OUT keeps reports there (default: a temp dir, removed
# on success).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
TOOLS_BIN="${TOOLS_BIN:-$HOME/.cache/clowder/tools/bin}"
CLOWDER_BIN="${CLOWDER_BIN:-$here/../bin/clowder}"
CONFORMANCE="${CONFORMANCE:-$TOOLS_BIN/conformance}"
REGISTRY="${REGISTRY:-$TOOLS_BIN/registry}"
CRANE="${CRANE:-$TOOLS_BIN/crane}"
ORAS="${ORAS:-$TOOLS_BIN/oras}"
for b in "$CLOWDER_BIN" "$CONFORMANCE" "$REGISTRY" "$CRANE" "$ORAS"; do
	[[ -x "$b" ]] || { echo "conformance: $b is not executable (make build tools)" >&2; exit 2; }
done

log() { printf 'conformance: %s\n' "$*" >&2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/clowder-conformance.XXXXXX")
out="${CONFORMANCE_OUT:-$work/reports}"
mkdir -p "$out"
clowder_pid=
failed=
cleanup() {
	if [[ -n "$clowder_pid" ]] && kill -0 "$clowder_pid" 2>/dev/null; then
		kill "$clowder_pid" 2>/dev/null || true
		wait "$clowder_pid" 2>/dev/null || true
	fi
	REGISTRY="$REGISTRY" bash "$here/registry-sandbox.sh" stop "$work/registry" >/dev/null 2>&1 || true
	if [[ -z "$failed" && -z "${CONFORMANCE_OUT:-}" ]]; then
		rm -rf "$work"
	else
		log "reports, logs and data kept in $work (reports: $out)"
	fi
}
trap cleanup EXIT

free_port() {
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# --- the upstream: a CNCF distribution registry, seeded ---------------------
regport=$(free_port)
REGISTRY="$REGISTRY" bash "$here/registry-sandbox.sh" start "$work/registry" "$regport" 2>/dev/null
reg="127.0.0.1:$regport"
seed="$work/seed"
mkdir -p "$seed"
head -c 200000 /dev/urandom >"$seed/weights.bin"
tar -C "$seed" -cf "$seed/layer.tar" weights.bin
echo '{"sbom":"clowder conformance seed"}' >"$seed/sbom.json"
"$CRANE" append --insecure --oci-empty-base -f "$seed/layer.tar" -t "$reg/seed/repo:v1" >/dev/null 2>"$seed/crane.log"
"$CRANE" index append --insecure -m "$reg/seed/repo:v1" -t "$reg/seed/repo:multi" >/dev/null 2>>"$seed/crane.log"
(cd "$seed" && "$ORAS" attach --plain-http --artifact-type application/vnd.example.sbom+json \
	"$reg/seed/repo:v1" sbom.json:application/json >/dev/null 2>"$seed/oras.log")
img=$("$CRANE" digest --insecure "$reg/seed/repo:v1")
idx=$("$CRANE" digest --insecure "$reg/seed/repo:multi")
blobs=$("$CRANE" manifest --insecure "$reg/seed/repo:v1" | grep -o '"digest":"sha256:[0-9a-f]*"' | cut -d'"' -f4 | sort -u | tr '\n' ' ')
[[ -n "$img" && -n "$idx" && -n "$blobs" ]] || { failed=1; log "seeding the upstream failed"; exit 1; }

# --- clowder ------------------------------------------------------------------
cat >"$work/clowder.yaml" <<EOF
listen: 127.0.0.1:0
root: $work/root
log_level: info
hosted_prefix: local
upstreams:
  - name: cncf
    type: oci
    url: http://$reg
    tag_ttl: 1m
EOF
"$CLOWDER_BIN" serve --config "$work/clowder.yaml" 2>"$work/clowder.log" &
clowder_pid=$!
addr=
for _ in $(seq 1 100); do
	addr=$(sed -n 's/.*"listen":"\(127\.0\.0\.1:[0-9]*\)".*"message":"listening".*/\1/p' "$work/clowder.log" | head -n1)
	[[ -n "$addr" ]] && break
	kill -0 "$clowder_pid" 2>/dev/null || break
	sleep 0.1
done
[[ -n "$addr" ]] || { failed=1; log "clowder did not start:"; tail -n 20 "$work/clowder.log" >&2; exit 1; }
log "clowder $("$CLOWDER_BIN" version 2>/dev/null | head -n1) on $addr, upstream registry on $reg"

# count_of STATUS REPORT: the suite's count of checks with STATUS.
count_of() { sed -n "s/^  $1\.*: *\([0-9]*\)$/\1/p" "$2" | head -n1; }

# run NAME [VAR=VALUE...]: one suite run; fails unless it passes with zero
# failures and errors.
run() {
	local name=$1
	shift
	local dir="$out/$name" rc=0
	mkdir -p "$dir"
	(cd "$dir" && env OCI_REGISTRY="$addr" OCI_TLS=disabled OCI_RESULTS_DIR="$dir/results" OCI_LOG=warn "$@" \
		"$CONFORMANCE" >"$dir/report.txt" 2>"$dir/stderr.txt") || rc=$?
	local note=
	if [[ $rc -ne 0 ]] && grep -q 'ReportResultsYAML' "$dir/stderr.txt"; then
		# A bug of the pinned suite: with OCI_API_PUSH=false it records a
		# status for the skipped blob tests without their data set and
		# panics writing results.yaml, after printing the full report.
		rc=0 note=" [suite crashed writing results.yaml after its report: known read-only-mode bug]"
	fi
	local pass fail err skip dis
	pass=$(count_of Pass "$dir/report.txt") fail=$(count_of FAIL "$dir/report.txt") err=$(count_of Error "$dir/report.txt")
	skip=$(count_of Skip "$dir/report.txt") dis=$(count_of Disabled "$dir/report.txt")
	printf 'conformance: %-11s passed %4s  failed %3s  errors %3s  skipped %3s  disabled %3s%s\n' \
		"$name" "${pass:-?}" "${fail:-?}" "${err:-?}" "${skip:-?}" "${dis:-?}" "$note"
	if [[ $rc -ne 0 || "$fail" != 0 || "$err" != 0 ]] || ! grep -q '^OCI Conformance Result: Pass$' "$dir/report.txt"; then
		failed=1
		sed -n '/^Test results/,/^Configuration:/p' "$dir/report.txt" | grep -iE 'fail|error' | head -n 40 >&2 || true
		head -n 20 "$dir/stderr.txt" >&2 || true
	fi
}

hosted_env=(OCI_API_PULL=true OCI_API_PUSH=true OCI_API_TAGS_LIST=true OCI_API_REFERRER=true
	OCI_API_TAGS_DELETE=true OCI_API_MANIFESTS_DELETE=true OCI_API_BLOBS_DELETE=true OCI_DATA_SHA512=true)
run hosted OCI_REPO1=local/conformance/repo1 OCI_REPO2=local/conformance/repo2 "${hosted_env[@]}"
run hosted-dev OCI_REPO1=local/conformance-dev/repo1 OCI_REPO2=local/conformance-dev/repo2 "${hosted_env[@]}" OCI_VERSION=dev

proxy_env=(OCI_REPO1=cncf/seed/repo OCI_REPO2=cncf/seed/repo2 OCI_API_PULL=true OCI_API_PUSH=false
	OCI_API_TAGS_LIST=true OCI_API_REFERRER=true
	OCI_API_TAGS_DELETE=false OCI_API_MANIFESTS_DELETE=false OCI_API_BLOBS_DELETE=false
	"OCI_RO_DATA_TAGS=v1 multi" "OCI_RO_DATA_MANIFESTS=$img $idx" "OCI_RO_DATA_BLOBS=${blobs% }" "OCI_RO_DATA_REFERRERS=$img")
run proxy-cold "${proxy_env[@]}"
run proxy-warm "${proxy_env[@]}"

if [[ -n "$failed" ]]; then
	log "FAILED"
	exit 1
fi
log "all runs passed with zero failures"
