package oci

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/clowder-dev/clowder/upstream"
)

// MediaTypeOf always names a type, and a shallow JSON body's own mediaType
// wins; a body nested past upstream.MaxJSONDepth is not parsed at all.
func FuzzMediaTypeOf(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`), "application/json")
	f.Add([]byte(`{"schemaVersion":2,"config":{"mediaType":"application/vnd.docker.container.image.v1+json"},"layers":[]}`), "text/plain")
	f.Add([]byte(`{"schemaVersion":1,"fsLayers":[],"signatures":[]}`), "")
	f.Add([]byte(`{"manifests":[]}`), "application/vnd.docker.distribution.manifest.list.v2+json; charset=x")
	f.Add([]byte(strings.Repeat(`{"a":`, 100)+"1"+strings.Repeat("}", 100)), "")
	f.Add([]byte(`not json`), "application/x-custom")
	f.Fuzz(func(t *testing.T, body []byte, ct string) {
		mt := MediaTypeOf(body, ct)
		if mt == "" && baseMediaType(ct) == "" {
			t.Fatalf("MediaTypeOf(%q, %q) is empty", body, ct)
		}
		var probe struct {
			MediaType string `json:"mediaType"`
		}
		if upstream.CheckJSONDepth(body, upstream.MaxJSONDepth) == nil && json.Unmarshal(body, &probe) == nil && probe.MediaType != "" && mt != probe.MediaType {
			t.Fatalf("MediaTypeOf(%q) = %q, body says %q", body, mt, probe.MediaType)
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/10", "bytes 5-9/*", "bytes 9-5/10", "bytes 0-9/9", "bytes -1-2/3", "bytes 0-99999999999999999999/1", "items 0-1/2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, total, ok := parseContentRange(s)
		if ok && (start < 0 || end < start || (total != -1 && total <= end)) {
			t.Fatalf("parseContentRange(%q) = %d-%d/%d", s, start, end, total)
		}
	})
}

func FuzzLinkNext(f *testing.F) {
	for _, s := range []string{`</v2/x/tags/list?n=1&last=a>; rel="next"`, `<a>; rel=prev, <b>; rel=next`, `<`, `>; rel="next"<`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n := linkNext(s); strings.Contains(n, ">") {
			t.Fatalf("linkNext(%q) = %q runs past the closing bracket", s, n)
		}
	})
}
