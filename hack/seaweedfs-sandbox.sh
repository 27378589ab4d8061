#!/usr/bin/env bash
# Run SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one
# process) on loopback only, with its data in DIR, for the s3 backend's tests.
#
#   hack/seaweedfs-sandbox.sh start DIR [S3PORT]  start, wait for S3, print the endpoint
#   hack/seaweedfs-sandbox.sh stop DIR
#
# S3PORT is a base: S3 takes it and the other listeners the next ports
# (S3PORT+1 .. S3PORT+9, see below); without it a free block is picked. Every
# port is passed explicitly, so weed fails rather than silently moving one.
# Credentials: S3_ACCESS_KEY/S3_SECRET_KEY (default clowder/clowder-secret,
# an identity with Admin,Read,Write,List,Tagging), region anything (us-east-1).
# Layout: DIR/data (weed -dir) DIR/s3.json (identities) DIR/weed.log
# DIR/weed.pid DIR/endpoint (http://127.0.0.1:S3PORT) DIR/ports.
# WEED selects the binary (default: $TOOLS_BIN/weed, then PATH; make tool-seaweedfs).
set -euo pipefail

usage() { sed -n '2,16p' "$0" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
cmd=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
TOOLS_BIN="${TOOLS_BIN:-${TOOLS_DIR:-$HOME/.cache/clowder/tools}/bin}"
if [[ -z "${WEED:-}" ]]; then
	if [[ -x "$TOOLS_BIN/weed" ]]; then WEED="$TOOLS_BIN/weed"; else WEED=weed; fi
fi
S3_ACCESS_KEY="${S3_ACCESS_KEY:-clowder}"
S3_SECRET_KEY="${S3_SECRET_KEY:-clowder-secret}"
pidf="$dir/weed.pid"
NPORTS=10

log() { printf 'seaweedfs-sandbox: %s\n' "$*" >&2; }
. "$(dirname "${BASH_SOURCE[0]}")/sandbox-lib.sh"
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
block_free() {
	local i
	for ((i = 0; i < NPORTS; i++)); do port_free $(($1 + i)) || return 1; done
}

case $cmd in
start)
	if running; then
		log "already running (pid $(cat "$pidf"))"
		cat "$dir/endpoint"
		exit 0
	fi
	command -v "$WEED" >/dev/null 2>&1 || { log "no weed binary ($WEED): run 'make tool-seaweedfs'"; exit 1; }
	if [[ $# -ge 3 ]]; then
		base=$3
		block_free "$base" || { log "a port in $base..$((base + NPORTS - 1)) is in use"; exit 1; }
	else
		# Below the Linux ephemeral range (32768+), so outgoing connections
		# cannot grab a port between this check and weed's bind.
		for _ in $(seq 1 50); do
			base=$((20000 + (RANDOM % 1200) * NPORTS))
			block_free "$base" && break
			base=
		done
		[[ -n "$base" ]] || { log "no free block of $NPORTS ports found"; exit 1; }
	fi
	s3=$base
	mkdir -p "$dir/data"
	cat >"$dir/s3.json" <<-EOF
		{
		  "identities": [
		    {
		      "name": "$S3_ACCESS_KEY",
		      "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
		      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
		    }
		  ]
		}
	EOF
	# Unix sockets default to /tmp/seaweedfs-{filer,s3}-<port>.sock; keep them
	# in DIR when the path fits (sun_path is 108 bytes).
	sock=()
	if [[ ${#dir} -lt 90 ]]; then
		sock=(-filer.localSocket="$dir/filer.sock" -s3.localSocket="$dir/s3.sock")
	fi
	args=(
		-dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1
		-master.telemetry=false
		-s3.config="$dir/s3.json"
		-s3.port="$s3" -s3.port.grpc=$((base + 1))
		-master.port=$((base + 2)) -master.port.grpc=$((base + 3))
		-volume.port=$((base + 4)) -volume.port.grpc=$((base + 5))
		-filer.port=$((base + 6)) -filer.port.grpc=$((base + 7))
		-admin.port=$((base + 8)) -admin.port.grpc=$((base + 9)) -admin.port.legacy=0
		-admin.ui=false -webdav=false -webdav.port=0
		-s3.port.iceberg=0 -s3.port.lance=0
		"${sock[@]}"
	)
	printf 's3=%s s3.grpc=%s master=%s master.grpc=%s volume=%s volume.grpc=%s filer=%s filer.grpc=%s admin=%s admin.grpc=%s\n' \
		$(seq "$base" $((base + NPORTS - 1))) >"$dir/ports"
	# No AWS_*/S3_BUCKET from the caller: weed mini would turn them into an
	# extra identity / bucket.
	(cd "$dir" && exec setsid env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u S3_BUCKET \
		"$WEED" mini "${args[@]}" >"$dir/weed.log" 2>&1 </dev/null) &
	echo $! >"$pidf"
	endpoint="http://127.0.0.1:$s3"
	echo "$endpoint" >"$dir/endpoint"
	# Ready = a signed ListBuckets with our identity answers 200 (the S3
	# gateway is up, the filer behind it too, and s3.json is loaded).
	for _ in $(seq 1 600); do
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
			--aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
			"$endpoint/" 2>/dev/null || true)
		if [[ $code == 200 ]]; then
			log "pid $(cat "$pidf"), S3 on $endpoint (ports: $(cat "$dir/ports"))"
			echo "$endpoint"
			exit 0
		fi
		running || break
		sleep 0.1
	done
	log "failed to start; log follows"
	tail -n 30 "$dir/weed.log" >&2
	"$0" stop "$dir" || true
	exit 1
	;;
stop)
	stop_pid 100
	;;
*) usage ;;
esac
