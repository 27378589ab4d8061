# tools.mk: pinned real OCI clients for Clowder's end-to-end tests.
#
# Included by the top-level Makefile. Installs into a cache OUTSIDE the repo,
# keyed by version (see hack/install-tools.sh); idempotent, so a second
# `make tools` takes seconds.
#
#   make tools            install/verify all of them
#   make tool-crane       just one (crane, oras, regctl, registry, skopeo, containerd, nginx,
#                         ollama, hfjs, seaweedfs; seaweedfs is built by test-s3 and bench)
#   make tools-env        print `export NAME=path` lines: eval "$$(make -s tools-env)"
#   make tools-versions   print what is installed
#   make tools-smoke      prove every client works against a loopback registry
#
# How each is used on loopback: hack/CLIENTS.md.

# Directory of this file (captured now: MAKEFILE_LIST changes as more is included).
TOOLS_MK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

TOOLS_DIR ?= $(HOME)/.cache/clowder/tools
TOOLS_BIN := $(TOOLS_DIR)/bin

CRANE_VERSION    ?= v0.22.1
ORAS_VERSION     ?= v1.3.6
REGCTL_VERSION   ?= v0.11.7
REGISTRY_VERSION ?= v3.1.2
OLLAMA_VERSION   ?= v0.32.15
HFJS_VERSION     ?= 2.17.5
# SeaweedFS has no usable tags for Go builds: a pseudo-version (commit 7506e5f91cd6).
SEAWEEDFS_VERSION ?= v0.0.0-20261109003541-7506e5f91cd6

CRANE      := $(TOOLS_BIN)/crane
ORAS       := $(TOOLS_BIN)/oras
REGCTL     := $(TOOLS_BIN)/regctl
REGISTRY   := $(TOOLS_BIN)/registry
OLLAMA     := $(TOOLS_BIN)/ollama
HFJS_DIR   := $(TOOLS_BIN)/hfjs
SKOPEO     := $(TOOLS_BIN)/skopeo
CTR        := $(TOOLS_BIN)/ctr
CONTAINERD := $(TOOLS_BIN)/containerd
NGINX      := $(TOOLS_BIN)/nginx
WEED       := $(TOOLS_BIN)/weed

TOOLS_VARS := TOOLS_DIR TOOLS_BIN CRANE ORAS REGCTL REGISTRY SKOPEO CTR CONTAINERD NGINX OLLAMA HFJS_DIR WEED

# Recipes and tests run by make see the paths in their environment.
export TOOLS_DIR TOOLS_BIN CRANE ORAS REGCTL REGISTRY SKOPEO CTR CONTAINERD NGINX OLLAMA HFJS_DIR WEED

TOOLS_INSTALL = TOOLS_DIR='$(TOOLS_DIR)' CRANE_VERSION='$(CRANE_VERSION)' \
	ORAS_VERSION='$(ORAS_VERSION)' REGCTL_VERSION='$(REGCTL_VERSION)' \
	REGISTRY_VERSION='$(REGISTRY_VERSION)' OLLAMA_VERSION='$(OLLAMA_VERSION)' HFJS_VERSION='$(HFJS_VERSION)' \
	SEAWEEDFS_VERSION='$(SEAWEEDFS_VERSION)' bash $(TOOLS_MK_DIR)/hack/install-tools.sh

TOOL_NAMES := crane oras regctl registry skopeo containerd nginx ollama hfjs seaweedfs

.PHONY: tools tools-env tools-versions tools-smoke $(addprefix tool-,$(TOOL_NAMES))

tools:
	@$(TOOLS_INSTALL) all

$(addprefix tool-,$(TOOL_NAMES)): tool-%:
	@$(TOOLS_INSTALL) $*

tools-env:
	@$(foreach v,$(TOOLS_VARS),echo "export $(v)=$($(v))";)

tools-versions:
	@echo "crane    $$($(CRANE) version 2>/dev/null || echo missing)"
	@echo "oras     $$($(ORAS) version 2>/dev/null | sed -n 's/^Version: *//p' || echo missing)"
	@echo "regctl   $$($(REGCTL) version --format '{{.VCSTag}}' 2>/dev/null || echo missing)"
	@echo "registry $$($(REGISTRY) --version 2>/dev/null || echo missing)"
	@echo "skopeo   $$($(SKOPEO) --version 2>/dev/null || echo missing)"
	@echo "ctr      $$($(CTR) --version 2>/dev/null || echo missing)"
	@echo "containerd $$($(CONTAINERD) --version 2>/dev/null || echo missing)"
	@echo "nginx    $$($(NGINX) -v 2>&1 || echo missing)"
	@echo "weed     $$( ($(WEED) version 2>/dev/null || echo missing) | head -n 1)"

tools-smoke: tools
	@bash $(TOOLS_MK_DIR)/hack/clients-smoke.sh
