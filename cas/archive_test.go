package cas_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/cas"
)

// tarEntry is one entry of a hand-made archive.
type tarEntry struct {
	name     string
	typ      byte
	data     []byte
	size     int64 // header size when it differs from len(data)
	linkname string
}

func makeTar(entries ...tarEntry) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		size := int64(len(e.data))
		if e.size != 0 {
			size = e.size
		}
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		if typ != tar.TypeReg {
			size = 0
		}
		_ = tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: typ, Size: size, Mode: 0o644, Linkname: e.linkname, Format: tar.FormatPAX})
		_, _ = tw.Write(e.data)
	}
	tw.Flush() // not Close: a short entry (size > data) stays short
	return b.Bytes()
}

// ustarHeader is a raw 512-byte header (for entries tar.Writer will not write).
func ustarHeader(name string, typ byte, size int) []byte {
	b := make([]byte, 512)
	copy(b[0:], name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], "00000000000\x00")
	b[156] = typ
	copy(b[257:], "ustar\x0000")
	for i := 148; i < 156; i++ {
		b[i] = ' '
	}
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func pad512(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

func paxRecord(k, v string) string {
	s := " " + k + "=" + v + "\n"
	for n := len(s) + 1; ; n++ {
		if len(fmt.Sprint(n))+len(s) == n {
			return fmt.Sprint(n) + s
		}
	}
}

// sparseBomb is a 3 KiB archive whose one blob entry reads as 1 TiB of
// zeros (a PAX 1.0 sparse file with a single empty data region).
func sparseBomb() []byte {
	name := "blobs/sha256/" + strings.Repeat("0", 64)
	pax := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") + paxRecord("GNU.sparse.name", name) + paxRecord("GNU.sparse.realsize", "1099511627776")
	var b bytes.Buffer
	b.Write(ustarHeader("pax", 'x', len(pax)))
	b.Write(pad512([]byte(pax)))
	m := pad512([]byte("1\n0\n0\n"))
	b.Write(ustarHeader("GNUSparseFile.0/x", '0', len(m)))
	b.Write(m)
	b.Write(make([]byte, 1024))
	return b.Bytes()
}

// validArchive is a one-blob OCI layout tar naming the blob "x:1".
func validArchive() ([]byte, digest.Digest) {
	blob := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	d := digest.FromBytes(blob)
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageIndex, Digest: d, Size: int64(len(blob)), Annotations: map[string]string{ocispec.AnnotationRefName: "x:1"}}}})
	return makeTar(
		tarEntry{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		tarEntry{name: "blobs/sha256/" + d.Encoded(), data: blob},
		tarEntry{name: "index.json", data: idx},
	), d
}

// outside snapshots every file under dir except root (path -> sha256), to
// show an import wrote nothing beside its layout.
func outside(t testing.TB, dir, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if p == root {
			return fs.SkipDir
		}
		if !e.IsDir() {
			b, _ := os.ReadFile(p)
			s := sha256.Sum256(b)
			out[p] = e.Type().String() + hex.EncodeToString(s[:])
		}
		return nil
	})
	return out
}

// checkLayout asserts that every file under blobs/ is a verified blob.
func checkLayout(t testing.TB, root string) {
	t.Helper()
	_ = filepath.WalkDir(filepath.Join(root, "blobs"), func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		if e.Type()&fs.ModeSymlink != 0 {
			t.Fatalf("import left a symlink in blobs/: %s", p)
		}
		rel, _ := filepath.Rel(filepath.Join(root, "blobs"), p)
		d := digest.Digest(strings.Replace(filepath.ToSlash(rel), "/", ":", 1))
		b, _ := os.ReadFile(p)
		if cas.ValidateDigest(d) != nil || d.Algorithm().FromBytes(b) != d {
			t.Fatalf("blobs/%s holds bytes that are not its digest", rel)
		}
		return nil
	})
}

// Hostile archives: traversal and absolute names, links, devices, huge and
// short sizes, a sparse bomb. Each is refused or ignored; none writes
// outside the root or puts a wrong byte under blobs/.
func TestImportHostileArchives(t *testing.T) {
	ok, d := validArchive()
	cases := map[string][]byte{
		"traversal":        makeTar(tarEntry{name: "../../evil", data: []byte("x")}, tarEntry{name: "blobs/../../../evil2", data: []byte("x")}, tarEntry{name: "index.json", data: []byte(`{"manifests":[]}`)}),
		"absolute":         makeTar(tarEntry{name: "/tmp/evil-abs", data: []byte("x")}, tarEntry{name: "index.json", data: []byte(`{"manifests":[]}`)}),
		"blob traversal":   makeTar(tarEntry{name: "blobs/sha256/../../../evil", data: []byte("x")}),
		"blob dotdot alg":  makeTar(tarEntry{name: "blobs/../" + strings.Repeat("a", 64), data: []byte("x")}),
		"symlink":          makeTar(tarEntry{name: "blobs/sha256/" + strings.Repeat("b", 64), typ: tar.TypeSymlink, linkname: "/etc/passwd"}, tarEntry{name: "index.json", data: []byte(`{"manifests":[]}`)}),
		"hardlink":         makeTar(tarEntry{name: "evil-link", typ: tar.TypeLink, linkname: "../../etc/passwd"}, tarEntry{name: "index.json", data: []byte(`{"manifests":[]}`)}),
		"wrong bytes":      makeTar(tarEntry{name: "blobs/sha256/" + strings.Repeat("c", 64), data: []byte("not these")}),
		"huge size, short": makeTar(tarEntry{name: "blobs/sha256/" + strings.Repeat("d", 64), data: []byte("abc"), size: 1 << 40}),
		"sparse bomb":      sparseBomb(),
		"unnamed traversal name": func() []byte {
			// A ref name with ../ is only a string in index.json, never a path.
			b, _ := validArchive()
			return bytes.Replace(b, []byte(`"x:1"`), []byte(`"../../x"`), 1)
		}(),
		"ok": ok,
	}
	for name, archive := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			root := filepath.Join(dir, "root")
			os.WriteFile(filepath.Join(dir, "sentinel"), []byte("keep"), 0o644)
			l, err := cas.OpenLayout(root)
			if err != nil {
				t.Fatal(err)
			}
			before := outside(t, dir, root)
			names, err := cas.Import(context.Background(), l, bytes.NewReader(archive), "imported")
			if name == "ok" && (err != nil || len(names) != 1 || !cas.Exists(context.Background(), l, d)) {
				t.Fatalf("Import of a good archive = %v, %v", names, err)
			}
			if name == "sparse bomb" && (err == nil || !strings.Contains(err.Error(), "sparse")) {
				t.Fatalf("Import of a sparse bomb = %v, want a refusal", err)
			}
			after := outside(t, dir, root)
			if fmt.Sprint(before) != fmt.Sprint(after) {
				t.Fatalf("Import wrote outside the root:\nbefore %v\nafter  %v", before, after)
			}
			if _, err := os.Lstat("/tmp/evil-abs"); err == nil {
				t.Fatal("Import wrote /tmp/evil-abs")
			}
			checkLayout(t, root)
			if ents, _ := os.ReadDir(filepath.Join(root, ".clowder", "ingest")); len(ents) != 0 {
				t.Fatalf("Import left %d ingest files", len(ents))
			}
		})
	}
}

// Import of any byte string never panics, never writes outside the root,
// and never puts a byte under blobs/ that is not its digest.
func FuzzImport(f *testing.F) {
	ok, _ := validArchive()
	f.Add(ok)
	f.Add(sparseBomb())
	f.Add(makeTar(tarEntry{name: "../../evil", data: []byte("x")}, tarEntry{name: "blobs/sha256/../../x", data: []byte("y")}))
	f.Add(makeTar(tarEntry{name: "blobs/sha256/" + strings.Repeat("d", 64), data: []byte("abc"), size: 1 << 40}))
	f.Add(makeTar(tarEntry{name: "index.json", data: []byte(`{"manifests":[{"digest":"sha256:../../x","size":1}]}`)}))
	// One layout for the whole run (opening one fsyncs): each input is
	// imported into it, and the checks hold for whatever accumulated.
	dir := f.TempDir()
	root := filepath.Join(dir, "root")
	l, err := cas.OpenLayout(root)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, archive []byte) {
		_, _ = cas.Import(context.Background(), l, bytes.NewReader(archive), "imported")
		if got := outside(t, dir, root); len(got) != 0 {
			t.Fatalf("Import wrote outside the root: %v", got)
		}
		checkLayout(t, root)
	})
}

// Export hashes what it copies: a damaged blob (bit rot on disk, or an
// object changed in an s3 bucket) fails the export instead of going into
// the tar, to be refused only by the import across the air gap.
func TestExportRefusesDamagedBlob(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	l, err := cas.OpenLayout(root)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	cfg := []byte("{}")
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(body), Size: int64(len(body)),
		Annotations: map[string]string{cas.AnnotationRefName: "damaged:v1"}}
	for _, b := range [][]byte{cfg, body} {
		if _, err := cas.Ingest(ctx, l, ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	p, err := l.BlobPath(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	damaged := bytes.Replace(body, []byte(`"layers":[]`), []byte(`"layers":{}`), 1)
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, damaged, 0o444); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := cas.Export(ctx, l, []ocispec.Descriptor{desc}, &out); !errors.Is(err, cas.ErrDigestMismatch) {
		t.Errorf("Export(damaged manifest) = %v, want %v", err, cas.ErrDigestMismatch)
	}
}
