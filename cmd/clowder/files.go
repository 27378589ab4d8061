package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/clowder-dev/clowder/upstream"
)

func newPathCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "path NAME [FILE]",
		Short: "Print the blob path of a file of NAME (or of an ollama model's model layer)",
		Long: `Print the path under blobs/ that holds FILE of NAME, so an inference engine can read
the cached bytes in place (llama.cpp -m "$(clowder path registry.ollama.ai/library/qwen2:0.5b)").
Without FILE: the model layer of an ollama model, or the only layer of a one-file artifact.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := g.app()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			_, d, _, err := resolveName(ctx, a, args[0])
			if err != nil {
				return err
			}
			m, err := manifestOf(ctx, a, d)
			if err != nil {
				return err
			}
			var l *ocispec.Descriptor
			switch {
			case len(args) == 2:
				for i := range m.Layers {
					if m.Layers[i].Annotations[ocispec.AnnotationTitle] == args[1] {
						l = &m.Layers[i]
					}
				}
				if l == nil {
					return fmt.Errorf("%s has no file %q", args[0], args[1])
				}
			default:
				for i := range m.Layers {
					if m.Layers[i].MediaType == "application/vnd.ollama.image.model" {
						l = &m.Layers[i]
					}
				}
				if l == nil && len(m.Layers) == 1 {
					l = &m.Layers[0]
				}
				if l == nil {
					return fmt.Errorf("%s has %d files: name one (clowder path %s FILE)", args[0], len(m.Layers), args[0])
				}
			}
			p, err := a.blobPath(l.Digest)
			if err != nil {
				return err
			}
			if _, err := os.Stat(p); err != nil {
				return fmt.Errorf("%s is not cached yet (clowder checkout or pull fetches it)", l.Digest)
			}
			fmt.Fprintln(cmd.OutOrStdout(), p)
			return nil
		},
	}
}

func newCheckoutCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "checkout NAME DIR",
		Short: "Lay NAME's files out in DIR as links into the cache (no byte copied)",
		Long: `Create DIR with one symbolic link per titled layer of NAME (a Hugging Face repo
revision, an oras artifact), named by its path, pointing at the read-only blob under blobs/.
transformers' from_pretrained(DIR) reads it as a local model. Missing blobs are fetched first.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := g.app()
			if err != nil {
				return err
			}
			return checkout(cmd.Context(), a, args[0], args[1], cmd.OutOrStdout())
		},
	}
}

func checkout(ctx context.Context, a *app, name, dir string, out io.Writer) error {
	_, d, rt, err := resolveName(ctx, a, name)
	if err != nil {
		return err
	}
	m, err := manifestOf(ctx, a, d)
	if err != nil {
		return err
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	// Every title is checked before anything is created: a hostile
	// manifest gets no file at all, not the ones before its bad title.
	for _, l := range m.Layers {
		if title := l.Annotations[ocispec.AnnotationTitle]; title != "" && !safeRel(title) {
			return fmt.Errorf("%s: file name %q would leave %s", name, title, dir)
		}
	}
	n := 0
	for _, l := range m.Layers {
		title := l.Annotations[ocispec.AnnotationTitle]
		if title == "" {
			continue
		}
		p, err := a.blobPath(l.Digest)
		if err != nil {
			return err
		}
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			if rt.Upstream == nil || rt.Upstream.Source == nil {
				return fmt.Errorf("%s (%s) is not cached and %s has no upstream", title, l.Digest, name)
			}
			if err := fetchBlob(ctx, a, rt, l); err != nil {
				return fmt.Errorf("%s: %w", title, err)
			}
		}
		target := filepath.Join(absDir, filepath.FromSlash(title))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		if cur, err := os.Readlink(target); err == nil && cur == p {
			n++
			continue
		}
		_ = os.Remove(target)
		if err := os.Symlink(p, target); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s has no titled files to check out", name)
	}
	fmt.Fprintf(out, "%d files in %s (links into %s)\n", n, absDir, filepath.Join(a.local.Root(), "blobs"))
	return nil
}

func fetchBlob(ctx context.Context, a *app, rt upstream.Route, l ocispec.Descriptor) error {
	b, err := a.proxy.GetBlob(ctx, rt, l.Digest)
	if err != nil {
		return err
	}
	defer b.Close()
	if b.Hit {
		return nil
	}
	r, err := b.Open(ctx, 0, -1)
	if err != nil {
		return err
	}
	defer r.Close()
	if _, err = io.Copy(io.Discard, r); err != nil {
		return err
	}
	return b.Wait(ctx)
}

// safeRel reports whether p is a relative path that stays inside its base.
func safeRel(p string) bool {
	if p == "" || filepath.IsAbs(p) || strings.ContainsRune(p, 0) || strings.Contains(p, "\\") {
		return false
	}
	for _, s := range strings.Split(p, "/") {
		if s == "" || s == "." || s == ".." {
			return false
		}
	}
	return true
}
