// Package e2e holds Clowder's end-to-end tests: real OCI clients (crane,
// oras, regctl, skopeo, containerd/ctr) pull through a built clowder binary
// from a real CNCF distribution registry, all on 127.0.0.1.
//
// Run them with `make e2e`, which builds the binary, installs the pinned
// clients (tools.mk) and sets CLOWDER_E2E=1, CLOWDER_BIN and the tool paths
// (CRANE ORAS REGCTL REGISTRY SKOPEO CTR CONTAINERD). Without CLOWDER_E2E the
// tests skip; with it, a missing tool is a failure.
package e2e
