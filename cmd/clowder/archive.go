package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/clowder-dev/clowder/cas"
)

func newExportCmd(g *globalFlags) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "export NAME... -o FILE.tar",
		Short: "Write names and their content as an OCI image layout tar (air-gap transfer)",
		Long: `Write an OCI image layout tar holding NAME... and everything they reference, readable by
clowder import and skopeo copy oci-archive:FILE.tar:NAME.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("-o FILE.tar is required")
			}
			a, err := g.app()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var descs []ocispec.Descriptor
			for _, n := range args {
				_, d, _, err := resolveName(ctx, a, n)
				if err != nil {
					return err
				}
				descs = append(descs, d)
			}
			tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			if err := cas.Export(ctx, a.store, descs, tmp); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Sync(); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), out); err != nil {
				return err
			}
			fi, _ := os.Stat(out)
			fmt.Fprintf(cmd.OutOrStdout(), "exported %d names to %s (%s)\n", len(descs), out, human(fi.Size()))
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "the tar file to write")
	return cmd
}

func newImportCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "import FILE.tar",
		Short: "Verify and add the content and names of an OCI image layout tar",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := g.appCreating()
			if err != nil {
				return err
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			names, err := cas.Import(cmd.Context(), a.store, f, "imported")
			for _, n := range names {
				fmt.Fprintf(cmd.OutOrStdout(), "imported %s\n", n)
			}
			return err
		},
	}
}

func newPushCmd(g *globalFlags) *cobra.Command {
	var insecure bool
	cmd := &cobra.Command{
		Use:   "push NAME REGISTRY/REPO:TAG",
		Short: "Push a cached name to any OCI registry",
		Long: `Push NAME (an image, an index with all its platforms held, or an artifact) from the cache
to REGISTRY/REPO:TAG. Credentials come from ~/.docker/config.json.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := g.app()
			if err != nil {
				return err
			}
			if a.s3 != nil {
				return errors.New("push reads the cache as a local OCI layout; with storage.type s3, run clowder export NAME and push the archive (e.g. crane push)")
			}
			ctx := cmd.Context()
			_, d, _, err := resolveName(ctx, a, args[0])
			if err != nil {
				return err
			}
			if err := cas.Walk(ctx, a.store, d, func(x ocispec.Descriptor, held bool) error {
				if !held {
					return fmt.Errorf("%s references %s: %w; clowder pull it first", args[0], x.Digest, cas.ErrIncomplete)
				}
				return nil
			}); err != nil {
				return err
			}
			var opts []name.Option
			if insecure {
				opts = append(opts, name.Insecure)
			}
			ref, err := name.ParseReference(args[1], opts...)
			if err != nil {
				return fmt.Errorf("%q: %v", args[1], err)
			}
			p, err := layout.FromPath(a.local.Root())
			if err != nil {
				return err
			}
			h, err := v1.NewHash(d.Digest.String())
			if err != nil {
				return err
			}
			ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
			if strings.Contains(d.MediaType, "index") || strings.Contains(d.MediaType, "manifest.list") {
				idx, err := p.ImageIndex()
				if err != nil {
					return err
				}
				child, err := idx.ImageIndex(h)
				if err != nil {
					return err
				}
				err = remote.WriteIndex(ref, child, ropts...)
				if err != nil {
					return err
				}
			} else {
				img, err := p.Image(h)
				if err != nil {
					return err
				}
				if err := remote.Write(ref, img, ropts...); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pushed %s to %s@%s\n", args[0], ref.Context(), d.Digest)
			return nil
		},
	}
	cmd.Flags().BoolVar(&insecure, "insecure", false, "allow plain http to the registry")
	return cmd
}
