package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/clowder-dev/clowder/proxy"
	hf "github.com/clowder-dev/clowder/upstream/huggingface"
)

// parseHFRef parses hf://[datasets/|spaces/]ORG/REPO[@REV][:PATH].
func parseHFRef(s string) (repo hf.RepoRef, rev, file string, err error) {
	rest, ok := strings.CutPrefix(s, "hf://")
	if !ok {
		return repo, "", "", fmt.Errorf("%q is not an hf:// reference", s)
	}
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		rest, file = rest[:i], rest[i+1:]
	}
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		rest, rev = rest[:i], rest[i+1:]
	}
	r, ok := proxy.RepoFromOCI(rest)
	if !ok || r.ID == "" {
		return repo, "", "", fmt.Errorf("%q: want hf://[datasets/]ORG/REPO[@REVISION][:PATH]", s)
	}
	if rev == "" {
		rev = "main"
	}
	return r, rev, file, nil
}

// pullHF fills the cache with a repo revision (or one file of it).
func pullHF(ctx context.Context, a *app, ref string, out io.Writer) error {
	repo, rev, file, err := parseHFRef(ref)
	if err != nil {
		return err
	}
	h := a.proxy.HF()
	if h == nil {
		return fmt.Errorf("no upstream of type huggingface is configured")
	}
	v, err := h.Resolve(ctx, repo, rev, "")
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	fmt.Fprintf(out, "%s@%s -> commit %s (%d files)\n", repo, rev, v.Commit, len(v.Files))
	var total int64
	n := 0
	for _, f := range v.Files {
		if file != "" && f.Path != file {
			continue
		}
		n++
		b, err := h.OpenFile(ctx, v, f, "")
		if err != nil {
			return fmt.Errorf("%s: %w", f.Path, err)
		}
		if !b.Hit {
			r, err := b.Open(ctx, 0, -1)
			if err != nil {
				b.Close()
				return fmt.Errorf("%s: %w", f.Path, err)
			}
			_, err = io.Copy(io.Discard, r)
			r.Close()
			if err == nil {
				err = b.Wait(ctx)
			}
			if err != nil {
				b.Close()
				return fmt.Errorf("%s: %w", f.Path, err)
			}
			fmt.Fprintf(out, "  %s fetched (%d bytes)\n", f.Path, f.Size)
		} else {
			fmt.Fprintf(out, "  %s cached (%d bytes)\n", f.Path, f.Size)
		}
		b.Close()
		total += f.Size
	}
	if file != "" && n == 0 {
		return fmt.Errorf("%s has no file %q at %s", repo, file, rev)
	}
	fmt.Fprintf(out, "pulled %s:%s (%d bytes), OCI view %s\n", h.OCIName(repo), proxy.RevisionTag(rev), total, v.Desc.Digest)
	return nil
}
