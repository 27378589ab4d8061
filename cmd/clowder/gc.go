package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/clowder-dev/clowder/cas"
)

func newRmCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove names from the cache (their bytes go with the next gc once nothing references them)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := g.app()
			if err != nil {
				return err
			}
			for _, n := range args {
				full, _, _, err := resolveName(cmd.Context(), a, n)
				if err != nil {
					return err
				}
				if err := a.store.Untag(cmd.Context(), full); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", full)
			}
			return nil
		},
	}
}

func newGCCmd(g *globalFlags) *cobra.Command {
	var (
		grace  time.Duration
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Remove blobs no name references (safe while clowder serve runs)",
		Long: `Mark every blob reachable from index.json names (through indexes and manifests to
configs and layers) and from hosted repositories' blob links, then remove the rest.
Blobs younger than --grace are kept, so content just fetched whose name is being
written is never swept; fills in progress are not under blobs/ at all.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := g.app()
			if err != nil {
				return err
			}
			roots, err := hostedLinks(a.local.Root())
			if err != nil {
				return err
			}
			res, err := a.gc(cmd.Context(), cas.GCOptions{Roots: roots, Grace: grace, DryRun: dryRun})
			if err != nil {
				return err
			}
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d blobs referenced; %s %d blobs (%s); kept %d recent unreferenced\n", res.Marked, verb, res.Swept, human(res.SweptBytes), res.KeptRecent)
			if a.s3 != nil && !dryRun {
				// Leases whose owner died and whose blob nobody missed since.
				n, err := a.s3.SweepLeases(cmd.Context(), time.Minute)
				if err != nil {
					return err
				}
				if n > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "removed %d expired fill leases\n", n)
				}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", time.Hour, "keep unreferenced blobs younger than this")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be removed")
	return cmd
}

// hostedLinks lists the blobs hosted repositories link
// (.clowder/hosted/<repo>/_blobs/<alg>/<hex>): GC roots.
func hostedLinks(root string) ([]digest.Digest, error) {
	var out []digest.Digest
	base := filepath.Join(root, ".clowder", "hosted")
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		dir, hex := filepath.Split(p)
		alg := filepath.Base(dir)
		if filepath.Base(filepath.Dir(filepath.Clean(dir))) != "_blobs" || strings.HasPrefix(hex, ".") {
			return nil
		}
		dg := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
		if cas.ValidateDigest(dg) == nil {
			out = append(out, dg)
		}
		return nil
	})
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return out, err
}
