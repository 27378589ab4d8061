// Package conformance holds the end-to-end checks of Clowder's hosted
// repositories with real clients: oras and crane push a model to
// HOST/local/team/model and pull it back through a clowder binary. The OCI
// distribution-spec conformance suite itself runs from hack/conformance.sh
// (make conformance). Like e2e/, the tests run only with CLOWDER_E2E=1.
package conformance
