#!/usr/bin/env bash
# Run a CNCF distribution registry on loopback with filesystem storage in DIR.
#
#   hack/registry-sandbox.sh start DIR PORT   start on 127.0.0.1:PORT, wait for /v2/
#   hack/registry-sandbox.sh stop DIR
#
# Layout: DIR/config.yml DIR/data DIR/registry.log (app log + Apache-style
# access log lines, one per request, with the full request URI incl. query)
# DIR/registry.pid.  REGISTRY selects the binary (default: from PATH).
set -euo pipefail

usage() { sed -n '2,10p' "$0" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
cmd=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
REGISTRY="${REGISTRY:-registry}"
pidf="$dir/registry.pid"

. "$(dirname "${BASH_SOURCE[0]}")/sandbox-lib.sh"

case $cmd in
start)
	[[ $# -ge 3 ]] || usage
	port=$3
	if running; then echo "registry-sandbox: already running" >&2; exit 0; fi
	mkdir -p "$dir/data"
	cat >"$dir/config.yml" <<-EOF
		version: 0.1
		log:
		  level: info
		  formatter: text
		  accesslog:
		    disabled: false
		storage:
		  filesystem:
		    rootdirectory: $dir/data
		  delete:
		    enabled: true
		http:
		  addr: 127.0.0.1:$port
		  secret: clowder-e2e-not-secret
	EOF
	setsid "$REGISTRY" serve "$dir/config.yml" >"$dir/registry.log" 2>&1 </dev/null &
	echo $! >"$pidf"
	for _ in $(seq 1 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "registry-sandbox: pid $(cat "$pidf") on 127.0.0.1:$port" >&2
			exit 0
		fi
		running || break
		sleep 0.1
	done
	echo "registry-sandbox: failed to start; log follows" >&2
	tail -n 20 "$dir/registry.log" >&2
	"$0" stop "$dir" || true
	exit 1
	;;
stop)
	stop_pid 50
	;;
*) usage ;;
esac
