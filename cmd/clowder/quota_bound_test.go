package main

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/clowder-dev/clowder/internal/testutil"
)

// imageBytes is what an image references: manifest, config and layers.
func imageBytes(t *testing.T, img v1.Image) int64 {
	t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}

// max_size with janitor_interval 200ms: ten images pulled one after another
// through clowder serve (one pinned, room for it and three more). Every pull
// gets the right bytes; while pulling, the bytes the names reference never
// exceed max_size by more than the one image being pulled, and once the
// janitor has run they are <= max_size with exactly the pinned name and the
// three most recently used ones left (a re-pull counts as use); the pinned
// name is never evicted; an evicted name pulls again.
func TestMaxSizeBoundsSequentialPulls(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	const pinned = "reg/keep/base:1"
	sizes := map[string]int64{}
	digests := map[string]string{}
	push := func(repo string, layerSize int64) {
		img := testutil.PushImage(t, reg.DirectHost, repo, "1", 2, layerSize)
		d, _ := img.Digest()
		sizes["reg/"+repo+":1"] = imageBytes(t, img)
		digests["reg/"+repo+":1"] = d.String()
	}
	push("keep/base", 30000)
	var order []string
	for i := range 8 {
		r := fmt.Sprintf("q/img%d", i)
		push(r, 40000)
		order = append(order, "reg/"+r+":1")
	}
	var maxImg int64
	for _, n := range order {
		maxImg = max(maxImg, sizes[n])
	}
	// Room for the pinned image and three others, not four.
	maxSize := sizes[pinned] + 3*maxImg + maxImg/2
	cfg := writeConfig(t, fmt.Sprintf(`upstreams:
  - {name: reg, url: 'http://%s', tag_ttl: 1h}
max_size: %d
pinned: ["reg/keep/*"]
janitor_interval: 200ms
`, reg.Host, maxSize))
	root := t.TempDir()
	p := startServe(t, cfg, root)

	// Sample the layout all along: the bound (plus the image being pulled)
	// and the pinned name.
	var (
		mu         sync.Mutex
		violations []string
		samples    int
		pinnedSeen bool
	)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(25 * time.Millisecond):
			}
			names, err := readNamesErr(root)
			mu.Lock()
			samples++
			if err != nil {
				violations = append(violations, err.Error())
				mu.Unlock()
				continue
			}
			has := false
			for _, n := range names {
				has = has || n.Name == pinned
			}
			if pinnedSeen && !has && len(violations) < 10 {
				violations = append(violations, fmt.Sprintf("pinned %s evicted (names %v)", pinned, nameList(names)))
			}
			pinnedSeen = pinnedSeen || has
			if got := referencedBytes(names); got > maxSize+maxImg && len(violations) < 10 {
				violations = append(violations, fmt.Sprintf("names reference %d bytes, want <= max_size %d + one image %d (names %v)", got, maxSize, maxImg, nameList(names)))
			}
			mu.Unlock()
		}
	}()

	// lru is the test's model: most recently used last.
	var lru []string
	use := func(n string) {
		for i, x := range lru {
			if x == n {
				lru = append(lru[:i], lru[i+1:]...)
				break
			}
		}
		lru = append(lru, n)
	}
	pull := func(n string) {
		t.Helper()
		repo, tag, _ := strings.Cut(n, ":")
		dg, _, err := pullThrough("http://"+p.addr, repo, tag)
		if err != nil {
			t.Fatalf("pull %s: %v\n%s", n, err, lastLines(p.log.String(), 20))
		}
		if dg != digests[n] {
			t.Fatalf("pull %s = %s, want %s", n, dg, digests[n])
		}
		if n != pinned {
			use(n)
		}
	}
	// settle waits for the janitor: <= max_size, and exactly the pinned
	// name and the three most recently used left.
	settle := func(step string) {
		t.Helper()
		keep := lru
		if len(keep) > 3 {
			keep = keep[len(keep)-3:]
		}
		want := append([]string{pinned}, keep...)
		sort.Strings(want)
		deadline := time.Now().Add(5 * time.Second)
		for {
			names := readNames(t, root)
			got := nameList(names)
			ref := referencedBytes(names)
			var missing []string
			for _, n := range names {
				missing = append(missing, n.Missing...)
			}
			if ref <= maxSize && strings.Join(got, " ") == strings.Join(want, " ") && len(missing) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: names %v referencing %d bytes (missing %v), want %v complete, referencing <= max_size %d\n%s", step, got, ref, missing, want, maxSize, lastLines(p.log.String(), 20))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	pull(pinned)
	for i, n := range order {
		pull(n)
		if i == 2 {
			settle("after 3 images")
			pull(order[0]) // img0 is used again: img1 is now the least recent
		}
		settle("after pulling " + n)
	}
	pull(order[0]) // evicted long ago: fetched again, evicting another
	settle("after pulling " + order[0] + " again")

	close(stop)
	<-sampled
	mu.Lock()
	t.Logf("%d samples of the layout; max_size %d, image %d bytes", samples, maxSize, maxImg)
	for _, v := range violations {
		t.Errorf("while pulling: %s", v)
	}
	mu.Unlock()
	if !strings.Contains(p.log.String(), "evicted (max_size, least recently used)") {
		t.Errorf("clowder serve logged no eviction")
	}
	p.kill()
	out, err := run(t, "ls", "--config", cfg, "--root", root)
	if err != nil {
		t.Fatalf("clowder ls: %v\n%s", err, out)
	}
	var listed []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "reg/") {
			listed = append(listed, f[0])
		}
	}
	sort.Strings(listed)
	want := []string{order[0], order[6], order[7], pinned}
	sort.Strings(want)
	if strings.Join(listed, " ") != strings.Join(want, " ") {
		t.Errorf("clowder ls names = %v, want %v\n%s", listed, want, out)
	}
	checkNamesComplete(t, cfg, root)
}

func nameList(names []layoutName) []string {
	var out []string
	for _, n := range names {
		out = append(out, n.Name)
	}
	sort.Strings(out)
	return out
}
