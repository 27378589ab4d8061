#!/usr/bin/env bash
# Run a private containerd daemon (as root) entirely inside DIR, without
# touching the system one: own --root, --state, socket, config with the CRI
# plugin (and other slow/unneeded plugins) disabled, so it starts in ~1s.
#
#   hack/containerd-sandbox.sh start DIR          start it, wait until it answers
#   hack/containerd-sandbox.sh stop DIR           stop it, unmount leftovers
#   hack/containerd-sandbox.sh env DIR            print CONTAINERD_ADDRESS=... etc.
#   hack/containerd-sandbox.sh mirror DIR HOST MIRROR_URL [SERVER_URL]
#       write DIR/certs.d/HOST/hosts.toml that sends pulls for HOST to
#       MIRROR_URL (e.g. http://127.0.0.1:5000); SERVER_URL defaults to
#       https://HOST (docker.io -> https://registry-1.docker.io).
#
# Layout: DIR/config.toml DIR/root DIR/state DIR/containerd.sock
#         DIR/containerd.log DIR/containerd.pid DIR/certs.d (for --hosts-dir)
# Use: ctr --address DIR/containerd.sock [-n NS] content fetch|images pull \
#        --hosts-dir DIR/certs.d ...       (see hack/CLIENTS.md)
# DIR must be short: the socket path must fit in 108 bytes.
# CONTAINERD / CTR select the binaries (default: from PATH).
set -euo pipefail

usage() { sed -n '2,20p' "$0" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
cmd=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
CONTAINERD="${CONTAINERD:-containerd}"
CTR="${CTR:-ctr}"
sock="$dir/containerd.sock"
pidf="$dir/containerd.pid"

. "$(dirname "${BASH_SOURCE[0]}")/sandbox-lib.sh"

case $cmd in
start)
	if running; then
		echo "containerd-sandbox: already running (pid $(cat "$pidf"))" >&2
		exit 0
	fi
	if [[ ${#sock} -gt 100 ]]; then
		echo "containerd-sandbox: socket path too long: $sock" >&2
		exit 1
	fi
	mkdir -p "$dir/root" "$dir/state" "$dir/certs.d" "$dir/opt"
	cat >"$dir/config.toml" <<-EOF
		version = 2
		root = "$dir/root"
		state = "$dir/state"
		# Pull/fetch only: no Kubernetes CRI, no block-device snapshotters.
		disabled_plugins = [
		  "io.containerd.grpc.v1.cri",
		  "io.containerd.snapshotter.v1.aufs",
		  "io.containerd.snapshotter.v1.btrfs",
		  "io.containerd.snapshotter.v1.devmapper",
		  "io.containerd.snapshotter.v1.zfs",
		  "io.containerd.tracing.processor.v1.otlp",
		  "io.containerd.internal.v1.tracing",
		]

		[grpc]
		  address = "$sock"

		[ttrpc]
		  address = "$sock.ttrpc"

		[debug]
		  address = ""
		  level = "${CONTAINERD_LOG_LEVEL:-info}"

		[metrics]
		  address = ""

		[plugins."io.containerd.internal.v1.opt"]
		  path = "$dir/opt"
	EOF
	rm -f "$sock" "$sock.ttrpc"
	# setsid: own process group, so the caller's job control and signals
	# (e.g. Ctrl-C in a test runner) don't reach it; stop kills it by pid.
	setsid "$CONTAINERD" --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 </dev/null &
	echo $! >"$pidf"
	for _ in $(seq 1 100); do
		if "$CTR" --address "$sock" version >/dev/null 2>&1; then
			echo "containerd-sandbox: started pid $(cat "$pidf"), socket $sock" >&2
			exit 0
		fi
		if ! running; then break; fi
		sleep 0.1
	done
	echo "containerd-sandbox: failed to start; log follows" >&2
	tail -n 30 "$dir/containerd.log" >&2
	"$0" stop "$dir" || true
	exit 1
	;;
stop)
	stop_pid 50
	rm -f "$sock" "$sock.ttrpc"
	# Snapshotters/unpack may leave mounts below root or state.
	if command -v findmnt >/dev/null 2>&1; then
		# (grep finds nothing when nothing is mounted: not an error)
		findmnt -rn -o TARGET | { grep -F "$dir/" || true; } | sort -r | while read -r m; do
			umount -l "$m" 2>/dev/null || true
		done
	fi
	;;
env)
	echo "CONTAINERD_ADDRESS=$sock"
	echo "CONTAINERD_HOSTS_DIR=$dir/certs.d"
	;;
mirror)
	[[ $# -ge 4 ]] || usage
	host=$3 mirror=$4 server=${5:-}
	if [[ -z "$server" ]]; then
		if [[ $host == docker.io ]]; then server=https://registry-1.docker.io; else server=https://$host; fi
	fi
	mkdir -p "$dir/certs.d/$host"
	cat >"$dir/certs.d/$host/hosts.toml" <<-EOF
		server = "$server"

		[host."$mirror"]
		  capabilities = ["pull", "resolve"]
	EOF
	echo "$dir/certs.d/$host/hosts.toml"
	;;
*) usage ;;
esac
