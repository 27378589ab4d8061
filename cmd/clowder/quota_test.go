package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clowder-dev/clowder/internal/testutil"
)

// max_size evicts whole names, least recently used first, never a pinned
// one, and collects their blobs while serving.
func TestMaxSizeEvictsLRU(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	for _, r := range []string{"a", "b", "c"} {
		testutil.PushImage(t, reg.DirectHost, r, "1", 2, 50000)
	}
	// Each image references ~100 KB; room for two.
	cfg := writeConfig(t, fmt.Sprintf(`upstreams:
  - {name: reg, url: 'http://%s', tag_ttl: 1h}
max_size: 230KB
pinned: ["reg/a:*"]
janitor_interval: 200ms
`, reg.Host))
	root := t.TempDir()
	p := startServe(t, cfg, root)
	base := "http://" + p.addr
	pullAll := func(repo string) {
		t.Helper()
		code, body := get(t, base+"/v2/reg/"+repo+"/manifests/1")
		if code != 200 {
			t.Fatalf("manifest %s = %d", repo, code)
		}
		var m struct {
			Config struct{ Digest string }
			Layers []struct{ Digest string }
		}
		if err := jsonUnmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		for _, d := range append([]string{m.Config.Digest}, m.Layers[0].Digest, m.Layers[1].Digest) {
			if code, _ := get(t, base+"/v2/reg/"+repo+"/blobs/"+d); code != 200 {
				t.Fatalf("blob %s = %d", d, code)
			}
		}
	}
	pullAll("a")
	time.Sleep(300 * time.Millisecond)
	pullAll("b")
	time.Sleep(300 * time.Millisecond)
	pullAll("c")
	time.Sleep(300 * time.Millisecond)
	get(t, base+"/v2/reg/b/manifests/1") // b is now more recent than c
	// b and c are over the limit together with the pinned a: c must go.
	deadline := time.Now().Add(10 * time.Second)
	for {
		idx, _ := os.ReadFile(filepath.Join(root, "index.json"))
		s := string(idx)
		if !strings.Contains(s, `"reg/c:1"`) {
			if !strings.Contains(s, `"reg/a:1"`) || !strings.Contains(s, `"reg/b:1"`) {
				t.Fatalf("evicted the wrong names:\n%s", s)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing evicted past max_size:\n%s\n%s", s, p.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// c's blobs are collected once the grace period (10 s) passes; a and b
	// stay whole.
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(p.log.String(), "collected evicted blobs"); {
		if time.Now().After(deadline) {
			t.Fatalf("evicted blobs never collected:\n%s", p.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	p.kill()
	if n := len(blobFiles(root)); n != 8 { // a and b: manifest, config, 2 layers each
		t.Errorf("blobs after eviction and collection = %d, want 8", n)
	}
	if out, err := run(t, "verify", "--config", cfg, "--root", root); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}
	for _, n := range []string{"reg/a:1", "reg/b:1"} {
		if out, err := run(t, "export", "--config", cfg, "--root", root, n, "-o", filepath.Join(t.TempDir(), "x.tar")); err != nil {
			t.Errorf("%s incomplete after eviction: %v\n%s", n, err, out)
		}
	}
}
