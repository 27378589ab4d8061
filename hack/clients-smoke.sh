#!/usr/bin/env bash
# Smoke-test every pinned client (make tools) against a CNCF distribution
# registry on loopback, using exactly the command lines in hack/CLIENTS.md.
# No Clowder code involved: this proves the clients and the flags work here.
#
#   hack/clients-smoke.sh            (KEEP=1 keeps the temp dir for inspection)
#
# Needs root for the containerd part (skipped with NO_CONTAINERD=1).
set -uo pipefail

HACK=$(cd "$(dirname "$0")" && pwd)
TOOLS_BIN="${TOOLS_BIN:-${TOOLS_DIR:-$HOME/.cache/clowder/tools}/bin}"
CRANE="${CRANE:-$TOOLS_BIN/crane}" ORAS="${ORAS:-$TOOLS_BIN/oras}"
REGCTL="${REGCTL:-$TOOLS_BIN/regctl}" REGISTRY="${REGISTRY:-$TOOLS_BIN/registry}"
SKOPEO="${SKOPEO:-$TOOLS_BIN/skopeo}" CTR="${CTR:-$TOOLS_BIN/ctr}"
CONTAINERD="${CONTAINERD:-$TOOLS_BIN/containerd}"
export REGISTRY CTR CONTAINERD
for b in "$CRANE" "$ORAS" "$REGCTL" "$REGISTRY" "$SKOPEO" "$CTR" "$CONTAINERD"; do
	[[ -x $b ]] || { echo "missing $b: run 'make tools'" >&2; exit 1; }
done

W=$(mktemp -d /tmp/clowder-smoke.XXXXXX) # short: containerd socket path limit
cleanup() {
	"$HACK/containerd-sandbox.sh" stop "$W/ctd" >/dev/null 2>&1 || true
	"$HACK/registry-sandbox.sh" stop "$W/reg" >/dev/null 2>&1 || true
	if [[ -n "${KEEP:-}" ]]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 20000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}

pass=0 fail=0
# check NAME CMD...: run CMD, output to $W/logs/NAME.log
check() {
	local name=$1; shift
	if "$@" >"$W/logs/$name.log" 2>&1; then
		pass=$((pass + 1)); echo "ok   $name"
	else
		fail=$((fail + 1)); echo "FAIL $name (log: $W/logs/$name.log)"; sed 's/^/     | /' "$W/logs/$name.log" | tail -n 8
	fi
}
mkdir -p "$W/logs"

PORT=$(free_port)
R=127.0.0.1:$PORT
"$HACK/registry-sandbox.sh" start "$W/reg" "$PORT" || exit 1

# --- crane: build and push test content (single-arch images + an index)
mkdir -p "$W/layer/etc" && head -c 4096 /dev/urandom | base64 >"$W/layer/etc/hello.txt"
tar -C "$W/layer" -cf "$W/layer.tar" .
check crane-append   "$CRANE" append --insecure --oci-empty-base -f "$W/layer.tar" -t "$R/test/img:base"
check crane-mutate-amd64 "$CRANE" mutate --insecure --set-platform linux/amd64 "$R/test/img:base" -t "$R/test/img:amd64"
check crane-mutate-arm64 "$CRANE" mutate --insecure --set-platform linux/arm64 "$R/test/img:base" -t "$R/test/img:arm64"
check crane-index    "$CRANE" index append --insecure -m "$R/test/img:amd64" -m "$R/test/img:arm64" -t "$R/test/img:multi"
check crane-docker-media "$CRANE" append --insecure -f "$W/layer.tar" -t "$R/test/docker:1"
IDX=$("$CRANE" digest --insecure "$R/test/img:multi" 2>/dev/null)
check crane-digest   test -n "$IDX"
check crane-pull     "$CRANE" pull --insecure "$R/test/img:multi" "$W/img.tar"
check crane-pull-oci "$CRANE" pull --insecure --format oci "$R/test/img:multi" "$W/crane-oci"

# --- oras
echo "hello artifact $RANDOM" >"$W/artifact.txt"
check oras-push  bash -c "cd '$W' && '$ORAS' push --plain-http '$R/test/art:v1' --artifact-type application/vnd.clowder.test artifact.txt:text/plain"
check oras-pull  bash -c "'$ORAS' pull --plain-http -o '$W/oras-out' '$R/test/art:v1' && cmp '$W/oras-out/artifact.txt' '$W/artifact.txt'"
check oras-manifest-fetch "$ORAS" manifest fetch --plain-http "$R/test/img:multi"
check oras-copy-to-layout "$ORAS" copy --from-plain-http -r "$R/test/img:multi" --to-oci-layout "$W/oras-layout:multi"
check oras-fetch-layout bash -c "test \"\$('$ORAS' manifest fetch --oci-layout --descriptor '$W/oras-layout:multi' | grep -o 'sha256:[0-9a-f]*' | head -1)\" = '$IDX'"

# --- regctl (writes its config under HOME: use a temp one)
export RH="$W/regctl-home"
mkdir -p "$RH"
check regctl-registry-set env HOME="$RH" "$REGCTL" registry set --tls disabled "$R"
check regctl-digest bash -c "test \"\$(HOME='$RH' '$REGCTL' image digest '$R/test/img:multi')\" = '$IDX'"
check regctl-manifest-get env HOME="$RH" "$REGCTL" manifest get "$R/test/img:multi"
check regctl-copy-ocidir env HOME="$RH" "$REGCTL" image copy "$R/test/img:multi" "ocidir://$W/regctl-oci:multi"
check regctl-artifact-get bash -c "HOME='$RH' '$REGCTL' artifact get '$R/test/art:v1' | cmp - '$W/artifact.txt'"
check regctl-host-flag env HOME="$W/empty-home" "$REGCTL" --host "reg=$R,tls=disabled" image digest "$R/test/img:multi"

# --- skopeo
check skopeo-inspect-remote "$SKOPEO" inspect --tls-verify=false "docker://$R/test/img:multi"
check skopeo-copy "$SKOPEO" copy --src-tls-verify=false "docker://$R/test/img:multi" "oci:$W/skopeo-oci:multi"
check skopeo-copy-all "$SKOPEO" copy --all --src-tls-verify=false "docker://$R/test/img:multi" "oci:$W/skopeo-all:multi"
check skopeo-inspect-oci "$SKOPEO" inspect "oci:$W/skopeo-oci:multi"
# skopeo 1.9 re-encodes an index whose descriptors carry artifactType (crane
# index append adds it), so the index digest changes; children stay intact.
check oras-fetch-skopeo-layout bash -c "'$ORAS' manifest fetch --oci-layout '$W/skopeo-all:multi' | grep -o '\"platform\"' | wc -l | grep -qx 2"
DOCKER_DGST=$("$CRANE" digest --insecure "$R/test/docker:1" 2>/dev/null)
check skopeo-preserve-digests bash -c "'$SKOPEO' copy --preserve-digests --src-tls-verify=false 'docker://$R/test/docker:1' 'oci:$W/skopeo-docker:1' && test \"\$('$ORAS' manifest fetch --oci-layout --descriptor '$W/skopeo-docker:1' | grep -o 'sha256:[0-9a-f]*' | head -1)\" = '$DOCKER_DGST'"

# --- containerd (private daemon) pulling through a hosts.toml mirror
if [[ -z "${NO_CONTAINERD:-}" ]]; then
	C="$W/ctd" S="$W/ctd/containerd.sock" H=upstream.clowder.test
	if check containerd-start "$HACK/containerd-sandbox.sh" start "$C"; then
		"$HACK/containerd-sandbox.sh" mirror "$C" "$H" "http://$R" >/dev/null
		check ctr-content-fetch "$CTR" --address "$S" content fetch --hosts-dir "$C/certs.d" --all-platforms "$H/test/img:multi"
		check ctr-images-pull "$CTR" --address "$S" images pull --hosts-dir "$C/certs.d" "$H/test/img:multi"
		check ctr-images-pull-native "$CTR" --address "$S" images pull --snapshotter native --platform linux/arm64 --hosts-dir "$C/certs.d" "$H/test/img:arm64"
		check ctr-plain-http-direct "$CTR" --address "$S" images pull --plain-http "$R/test/docker:1"
		check mirror-saw-ns grep -q "GET /v2/test/img/manifests/sha256:[0-9a-f]*?ns=$H " "$W/reg/registry.log"
	fi
fi

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
