// Package ollama is the upstream for registry.ollama.ai, an "almost OCI"
// registry (see shared PROTOCOLS.md section 1): it 404s the /v2/ ping, has no
// usable manifest HEAD, serves manifests as text/plain (sometimes without a
// Content-Length) and no Docker-Content-Digest, and answers blob requests
// with a 307 to a presigned object-store URL that expires.
//
// The client is the OCI client with those quirks switched on: it never
// pings, resolves tags with a GET (the body is stored anyway), asks with the
// single Accept the ollama client sends, takes the media type from the
// manifest body and computes the digest itself. Blob redirects are followed
// on every request (never cached) and Authorization never goes to the
// object store.
package ollama

import (
	"github.com/clowder-dev/clowder/upstream/oci"
)

// Accept is the one manifest media type the ollama client asks for.
const Accept = oci.MediaTypeDockerManifest

// New returns a client for an ollama registry at baseURL.
func New(baseURL string, opts oci.Options) (*oci.Client, error) {
	opts.Accept = []string{Accept}
	opts.NoHEAD = true
	return oci.New(baseURL, opts)
}
