# Sourced by hack/*-sandbox.sh: the process bookkeeping they share. Each
# script sets pidf (its pid file) before using these.

# running: the process named in $pidf is alive.
running() { [[ -f "$pidf" ]] && kill -0 "$(cat "$pidf")" 2>/dev/null; }

# stop_pid TENTHS: SIGTERM the process in $pidf, SIGKILL it if it still
# lives after TENTHS tenths of a second, and remove $pidf.
stop_pid() {
	if running; then
		local pid
		pid=$(cat "$pidf")
		kill "$pid"
		for _ in $(seq 1 "$1"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" || true; fi
	fi
	rm -f "$pidf"
}
