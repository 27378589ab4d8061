package config

import (
	"fmt"
	"net/url"
	"strings"
)

// PathPrefix returns the repository prefix an oci or ollama upstream's URL
// carries in its path ("docker.io" for http://site:5000/docker.io), or "".
// Every repository name is sent under it (/v2/docker.io/library/alpine/...):
// that is how a worker Clowder reaches one upstream of a site Clowder,
// which routes by its upstreams' names.
func (u Upstream) PathPrefix() string {
	p, err := url.Parse(u.URL)
	if err != nil {
		return ""
	}
	return strings.Trim(p.Path, "/")
}

// checkUpstreamURL validates an upstream's url and returns it without a
// trailing slash: http or https, a host, no user, query or fragment. A path
// is allowed on oci and ollama upstreams only, as a repository prefix of one
// or more OCI path components; a huggingface upstream is the hub API at the
// URL's root.
func checkUpstreamURL(u Upstream) (string, error) {
	p, err := url.Parse(u.URL)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.RawQuery != "" || p.ForceQuery || p.Fragment != "" || p.User != nil {
		return "", fmt.Errorf("%q is not an http(s) URL of a host (like https://registry-1.docker.io)", u.URL)
	}
	prefix := strings.Trim(p.Path, "/")
	if prefix == "" {
		return strings.TrimSuffix(u.URL, "/"), nil
	}
	if u.Type == TypeHuggingFace {
		return "", fmt.Errorf("%q: a huggingface upstream takes no path (the hub API, or a site Clowder serving it, is at the root)", u.URL)
	}
	if p.RawPath != "" || strings.Contains(p.Path, "//") {
		return "", fmt.Errorf("%q: the path must be plain OCI path components (like http://site:5000/docker.io)", u.URL)
	}
	for _, seg := range strings.Split(prefix, "/") {
		if !ValidComponent(seg) {
			return "", fmt.Errorf("%q: path segment %q is not an OCI path component (lower-case letters, digits, '.', '_', '-'); the path is a repository prefix, like the name of a site Clowder's upstream (http://site:5000/docker.io)", u.URL, seg)
		}
	}
	return p.Scheme + "://" + p.Host + "/" + prefix, nil
}
