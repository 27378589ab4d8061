# conformance.mk: the OCI distribution-spec conformance suite against a
# clowder binary. Included by the top-level Makefile; `make test` runs it.
#
#   make conformance        build the suite (once, cached by version) and clowder,
#                           run hack/conformance.sh (hosted prefix: the suite's
#                           default configuration and OCI_VERSION=dev; a proxied
#                           namespace: pull checks, cold and warm), then the
#                           hosted push test with real oras and crane
#   make tool-conformance   just build the suite into the tools cache
#
# The suite is built like every other pinned tool (hack/install-tools.sh):
# $(TOOLS_DIR)/versions/conformance@$(CONFORMANCE_VERSION)/conformance.
# Keep the version equal to the default in hack/install-tools.sh.

CONFORMANCE_VERSION ?= v0.0.0-20260831232431-97274622c111
CONFORMANCE         := $(TOOLS_BIN)/conformance
export CONFORMANCE

.PHONY: conformance tool-conformance

tool-conformance:
	@TOOLS_DIR='$(TOOLS_DIR)' CONFORMANCE_VERSION='$(CONFORMANCE_VERSION)' bash $(TOOLS_MK_DIR)/hack/install-tools.sh conformance

conformance: tool-conformance tool-registry tool-crane tool-oras build
	CLOWDER_BIN=$(abspath $(BIN)) bash $(TOOLS_MK_DIR)/hack/conformance.sh
	CLOWDER_E2E=1 CLOWDER_BIN=$(abspath $(BIN)) $(GO) test -count=1 -timeout 5m ./conformance/
