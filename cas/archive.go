package cas

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrIncomplete means a name references content the store does not hold.
var ErrIncomplete = errors.New("not fully cached")

// Export writes the named descriptors and everything they reference as a
// standard OCI image layout tar (oci-layout, index.json, blobs/<alg>/<hex>),
// the format `skopeo copy oci-archive:` and `clowder import` read. Every
// blob is hashed as it is copied; a damaged one fails the export.
func Export(ctx context.Context, s BlobStore, descs []ocispec.Descriptor, w io.Writer) error {
	var blobs []ocispec.Descriptor
	seen := map[digest.Digest]bool{}
	for _, d := range descs {
		err := Walk(ctx, s, d, func(x ocispec.Descriptor, held bool) error {
			if !held {
				return fmt.Errorf("%s references %s (%s): %w; clowder pull it first", d.Annotations[AnnotationRefName], x.Digest, x.MediaType, ErrIncomplete)
			}
			if !seen[x.Digest] {
				seen[x.Digest] = true
				blobs = append(blobs, x)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	tw := tar.NewWriter(w)
	now := time.Unix(0, 0)
	put := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	lb, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := put(ocispec.ImageLayoutFile, lb); err != nil {
		return err
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/", "blobs/sha512/"} {
		if err := tw.WriteHeader(&tar.Header{Name: dir, Mode: 0o755, ModTime: now, Typeflag: tar.TypeDir}); err != nil {
			return err
		}
	}
	for _, b := range blobs {
		f, err := s.Open(ctx, b.Digest)
		if err != nil {
			return err
		}
		err = tw.WriteHeader(&tar.Header{Name: "blobs/" + b.Digest.Algorithm().String() + "/" + b.Digest.Encoded(), Mode: 0o444, Size: f.Size(), ModTime: now, Typeflag: tar.TypeReg})
		if err == nil {
			// Hashed on the way: a damaged blob fails here, not at the
			// import on the far side of an air gap.
			v := b.Digest.Verifier()
			_, err = io.Copy(tw, io.TeeReader(f, v))
			if err == nil && !v.Verified() {
				err = ErrDigestMismatch
			}
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("blob %s: %w", b.Digest, err)
		}
	}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: descs}
	ib, _ := json.MarshalIndent(idx, "", "  ")
	if err := put("index.json", ib); err != nil {
		return err
	}
	return tw.Close()
}

// isSparse reports whether h is a GNU or PAX sparse file.
func isSparse(h *tar.Header) bool {
	if h.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// Import reads an OCI image layout tar: every blob goes through the verified
// ingest path (a wrong blob is refused, nothing partial is ever visible), and
// each index.json entry whose content is complete is named by its
// org.opencontainers.image.ref.name (or <prefix>@<digest> without one).
// Paths in the tar never touch the filesystem: a blob entry only names the
// digest its bytes must hash to. Sparse entries are refused.
func Import(ctx context.Context, s Store, r io.Reader, unnamedPrefix string) ([]string, error) {
	tr := tar.NewReader(r)
	var index *ocispec.Index
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading archive: %w", err)
		}
		if isSparse(h) {
			// A sparse entry expands a few bytes of archive into any number
			// of zeros on disk: an export never writes one.
			return nil, fmt.Errorf("archive: entry %q is a sparse file, which is never imported", h.Name)
		}
		name := strings.TrimPrefix(h.Name, "./")
		switch {
		case h.Typeflag == tar.TypeDir:
			continue
		case name == ocispec.ImageLayoutFile:
			var l ocispec.ImageLayout
			b, err := io.ReadAll(io.LimitReader(tr, 4096))
			if err != nil || json.Unmarshal(b, &l) != nil || l.Version != ocispec.ImageLayoutVersion {
				return nil, fmt.Errorf("archive: bad oci-layout %q", b)
			}
		case name == "index.json":
			b, err := io.ReadAll(io.LimitReader(tr, 64<<20))
			if err != nil {
				return nil, err
			}
			var idx ocispec.Index
			if err := json.Unmarshal(b, &idx); err != nil {
				return nil, fmt.Errorf("archive: index.json: %w", err)
			}
			index = &idx
		case strings.HasPrefix(name, "blobs/") && h.Typeflag == tar.TypeReg:
			parts := strings.Split(name, "/")
			if len(parts) != 3 {
				return nil, fmt.Errorf("archive: unexpected entry %q", h.Name)
			}
			d := digest.Digest(parts[1] + ":" + parts[2])
			if err := ValidateDigest(d); err != nil {
				return nil, fmt.Errorf("archive: entry %q: %w", h.Name, err)
			}
			if _, err := Ingest(ctx, s, ocispec.Descriptor{Digest: d, Size: h.Size}, tr); err != nil {
				return nil, fmt.Errorf("archive: %w", err)
			}
		default:
			// Unknown files are allowed by the layout spec; ignored.
		}
	}
	if index == nil {
		return nil, errors.New("archive: no index.json (not an OCI image layout tar)")
	}
	var names []string
	for _, d := range index.Manifests {
		if err := Walk(ctx, s, d, func(x ocispec.Descriptor, held bool) error {
			if !held {
				return fmt.Errorf("archive: %s references %s, which it does not contain: %w", d.Digest, x.Digest, ErrIncomplete)
			}
			return nil
		}); err != nil {
			return names, err
		}
		n := d.Annotations[AnnotationRefName]
		if n == "" {
			n = unnamedPrefix + "@" + d.Digest.String()
		}
		if err := s.Tag(ctx, n, d); err != nil {
			return names, err
		}
		names = append(names, n)
	}
	return names, nil
}
