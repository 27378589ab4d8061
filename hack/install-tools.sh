#!/usr/bin/env bash
# Install the pinned real OCI clients used by Clowder's end-to-end tests into a
# cache OUTSIDE the repo, keyed by version. Idempotent: a tool whose pinned
# version is already installed is skipped, so a second run takes seconds.
#
#   hack/install-tools.sh [all|go|apt|crane|oras|regctl|registry|conformance|skopeo|containerd|seaweedfs]...
#
# Layout (TOOLS_DIR defaults to $HOME/.cache/clowder/tools):
#   $TOOLS_DIR/versions/<tool>@<version>/<binary>   real Go-built binaries
#   $TOOLS_DIR/bin/<binary>                         symlink to the pinned version
# Debian-packaged tools (skopeo, containerd, ctr) are installed with apt-get
# (skipped when the binaries already exist) and symlinked into $TOOLS_DIR/bin.
#
# Versions are normally passed in by tools.mk; the defaults below must match.
set -euo pipefail

TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/clowder/tools}"
CRANE_VERSION="${CRANE_VERSION:-v0.22.1}"
ORAS_VERSION="${ORAS_VERSION:-v1.3.6}"
REGCTL_VERSION="${REGCTL_VERSION:-v0.11.7}"
REGISTRY_VERSION="${REGISTRY_VERSION:-v3.1.2}"
OLLAMA_VERSION="${OLLAMA_VERSION:-v0.32.15}"
CONFORMANCE_VERSION="${CONFORMANCE_VERSION:-v0.0.0-20260831232431-97274622c111}"
HFJS_VERSION="${HFJS_VERSION:-2.17.5}"
SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
GO="${GO:-go}"

BIN_DIR="$TOOLS_DIR/bin"
VER_DIR="$TOOLS_DIR/versions"
mkdir -p "$BIN_DIR" "$VER_DIR"

log() { printf 'install-tools: %s\n' "$*" >&2; }

# Serialise concurrent runs (e.g. two `make tools` at once) on one cache.
if [[ -z "${_CLOWDER_TOOLS_LOCKED:-}" ]] && command -v flock >/dev/null 2>&1; then
	export _CLOWDER_TOOLS_LOCKED=1
	exec flock "$TOOLS_DIR/.lock" bash "$0" "$@"
fi

# link NAME TARGET: point $BIN_DIR/NAME at TARGET (atomically).
link() {
	local name=$1 target=$2
	if [[ "$(readlink "$BIN_DIR/$name" 2>/dev/null || true)" != "$target" ]]; then
		ln -sfn "$target" "$BIN_DIR/.$name.tmp"
		mv -Tf "$BIN_DIR/.$name.tmp" "$BIN_DIR/$name"
	fi
}

# go_tool NAME PKG VERSION: go install PKG@VERSION into versions/NAME@VERSION.
go_tool() {
	local name=$1 pkg=$2 version=$3
	local dir="$VER_DIR/$name@$version"
	if [[ -x "$dir/$name" && -f "$dir/.ok" ]]; then
		link "$name" "$dir/$name"
		log "$name $version: already installed"
		return 0
	fi
	local tmp="$dir.tmp.$$" start=$SECONDS
	rm -rf "$tmp"
	mkdir -p "$tmp"
	log "$name $version: go install $pkg@$version (this can take minutes)"
	# Build outside any module so the repo's go.mod/GOFLAGS cannot interfere.
	# CGO off (static binaries) unless CGO=1 (ollama needs it; gcc is on the machine).
	if ! (cd / && GOBIN="$tmp" CGO_ENABLED="${CGO:-0}" GOFLAGS= "$GO" install "$pkg@$version"); then
		rm -rf "$tmp"
		log "$name $version: BUILD FAILED"
		return 1
	fi
	printf '%s@%s\nbuilt in %ss with %s\n' "$pkg" "$version" "$((SECONDS - start))" \
		"$("$GO" version)" >"$tmp/.ok"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	link "$name" "$dir/$name"
	log "$name $version: built in $((SECONDS - start))s"
}

# gomod_tool NAME MODULE VERSION PKG [REPLACE]...: build PKG (a main package of
# MODULE@VERSION) into versions/NAME@VERSION/NAME from a throwaway tools module
# in a temp dir (never in the repo). For modules whose own go.mod has `replace`
# lines, which `go install pkg@version` refuses: each REPLACE ("old=new@v", as
# for `go mod edit -replace`) is repeated in the tools module. The generated
# go.mod/go.sum are kept next to the binary as a record of what was built.
gomod_tool() {
	local name=$1 mod=$2 version=$3 pkg=$4; shift 4
	local dir="$VER_DIR/$name@$version"
	if [[ -x "$dir/$name" && -f "$dir/.ok" ]]; then
		link "$name" "$dir/$name"
		log "$name $version: already installed"
		return 0
	fi
	local tmp="$dir.tmp.$$" start=$SECONDS src r
	rm -rf "$tmp"
	mkdir -p "$tmp"
	src=$(mktemp -d "${TMPDIR:-/tmp}/clowder-tools-$name.XXXXXX")
	log "$name $version: go build $pkg from a tools module requiring $mod@$version (this can take minutes)"
	local -a edits=(-require="$mod@$version" -tool="$pkg")
	for r in "$@"; do edits+=(-replace="$r"); done
	if ! (cd "$src" && export GOFLAGS= GOWORK=off CGO_ENABLED="${CGO:-0}" &&
		"$GO" mod init "clowder-tools/$name" >/dev/null 2>&1 &&
		"$GO" mod edit "${edits[@]}" &&
		"$GO" mod tidy &&
		"$GO" build -trimpath -o "$tmp/$name" "$pkg" &&
		cp go.mod go.sum "$tmp/"); then
		rm -rf "$tmp" "$src"
		log "$name $version: BUILD FAILED"
		return 1
	fi
	rm -rf "$src"
	printf '%s@%s (%s)\nbuilt in %ss with %s\n' "$mod" "$version" "$pkg" "$((SECONDS - start))" \
		"$("$GO" version)" >"$tmp/.ok"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	link "$name" "$dir/$name"
	log "$name $version: built in $((SECONDS - start))s"
}

# npm_tool NAME PACKAGE VERSION: npm install PACKAGE@VERSION into
# versions/NAME@VERSION (node_modules inside), linked as bin/NAME.
npm_tool() {
	local name=$1 pkg=$2 version=$3
	local dir="$VER_DIR/$name@$version"
	if [[ -f "$dir/.ok" ]]; then
		link "$name" "$dir"
		log "$name $version: already installed"
		return 0
	fi
	command -v npm >/dev/null 2>&1 || { log "$name: npm is missing"; return 1; }
	local tmp="$dir.tmp.$$" start=$SECONDS
	rm -rf "$tmp"
	mkdir -p "$tmp"
	log "$name $version: npm install $pkg@$version"
	if ! (cd "$tmp" && npm install --no-audit --no-fund --silent "$pkg@$version" >/dev/null); then
		rm -rf "$tmp"
		log "$name $version: INSTALL FAILED"
		return 1
	fi
	printf '%s@%s\n' "$pkg" "$version" >"$tmp/.ok"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	link "$name" "$dir"
	log "$name $version: installed in $((SECONDS - start))s"
}

APT_UPDATED=
apt_install() {
	local sudo=
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null 2>&1 || { log "need root (or sudo) to apt-get install $*"; return 1; }
		sudo=sudo
	fi
	export DEBIAN_FRONTEND=noninteractive
	# Try without refreshing the lists first; `apt-get update` once on failure
	# or when there are no lists at all (fresh machine).
	if [[ -z "$APT_UPDATED" ]] && ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
		$sudo apt-get update -qq && APT_UPDATED=1
	fi
	if ! $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
		[[ -n "$APT_UPDATED" ]] && return 1
		$sudo apt-get update -qq && APT_UPDATED=1
		$sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
	fi
}

# sys_bin NAME: the packaged binary's path (/usr/bin, else /usr/sbin), or "".
sys_bin() {
	local d
	for d in /usr/bin /usr/sbin; do
		[[ -x "$d/$1" ]] && { echo "$d/$1"; return; }
	done
}

# apt_tool PACKAGE BINARY...: ensure the binaries exist, link them into bin/.
apt_tool() {
	local pkg=$1; shift
	local b missing=
	for b in "$@"; do
		[[ -n "$(sys_bin "$b")" ]] || missing=1
	done
	if [[ -n "$missing" ]]; then
		log "$pkg: apt-get install $pkg"
		apt_install "$pkg"
	else
		log "$pkg: already installed ($(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || echo '?'))"
	fi
	for b in "$@"; do
		[[ -n "$(sys_bin "$b")" ]] || { log "$pkg: $b missing after install"; return 1; }
		link "$b" "$(sys_bin "$b")"
	done
}

install_one() {
	case $1 in
	crane) go_tool crane github.com/google/go-containerregistry/cmd/crane "$CRANE_VERSION" ;;
	oras) go_tool oras oras.land/oras/cmd/oras "$ORAS_VERSION" ;;
	regctl) go_tool regctl github.com/regclient/regclient/cmd/regctl "$REGCTL_VERSION" ;;
	registry) go_tool registry github.com/distribution/distribution/v3/cmd/registry "$REGISTRY_VERSION" ;;
	# The OCI distribution-spec conformance suite (a main package since its 2026 rewrite;
	# the module has no tags, so the pin is a pseudo-version: commit 97274622c111).
	conformance) go_tool conformance github.com/opencontainers/distribution-spec/conformance "$CONFORMANCE_VERSION" ;;
	# ollama: only v0.32.15 builds here (@latest resolves to v0.17.4, which does not); ~3-7 min.
	ollama) CGO=1 go_tool ollama github.com/ollama/ollama "$OLLAMA_VERSION" ;;
	# huggingface.js, the Hugging Face client that installs here (no PyPI).
	hfjs) npm_tool hfjs @huggingface/hub "$HFJS_VERSION" ;;
	# SeaweedFS (S3-compatible store for the s3 backend's integration tests; issue 8).
	# Not `go install`-able: its go.mod has a replace, repeated here; ~8.5 min on 2 cores (cold).
	seaweedfs) gomod_tool weed github.com/seaweedfs/seaweedfs "$SEAWEEDFS_VERSION" \
		github.com/seaweedfs/seaweedfs/weed \
		github.com/tyler-smith/go-bip39=github.com/cosmos/go-bip39@v1.0.0 ;;
	skopeo) apt_tool skopeo skopeo ;;
	containerd) apt_tool containerd containerd ctr ;;
	# nginx: the load balancer in front of the fleet e2e (and bench's baseline).
	nginx) apt_tool nginx nginx ;;
	go) for t in crane oras regctl registry conformance; do install_one "$t"; done ;;
	apt) for t in skopeo containerd nginx; do install_one "$t"; done ;;
	all) install_one go; install_one apt; install_one ollama; install_one hfjs ;;
	*) log "unknown tool: $1"; return 2 ;;
	esac
}

[[ $# -gt 0 ]] || set -- all
for t in "$@"; do
	install_one "$t"
done
