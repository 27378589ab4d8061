package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/clowder-dev/clowder/cas"
)

func newLsCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List cached names with their size, protocol and when they were last confirmed upstream; report bytes saved by dedup",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := g.app()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			descs, err := a.store.List(ctx)
			if err != nil {
				return err
			}
			types := map[string]string{}
			for _, u := range a.cfg.Upstreams {
				types[u.Name] = u.Type
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tPROTOCOL\tSIZE\tHELD\tCONFIRMED")
			unique := map[digest.Digest]int64{}
			roots := map[digest.Digest]bool{}
			var logical int64
			for _, d := range descs {
				var size, held int64
				err := cas.Walk(ctx, a.store, d, func(x ocispec.Descriptor, ok bool) error {
					size += x.Size
					if ok {
						held += x.Size
						unique[x.Digest] = x.Size
					}
					return nil
				})
				if err != nil {
					return err
				}
				if !roots[d.Digest] { // several names of one manifest share, not dedup
					roots[d.Digest] = true
					logical += held
				}
				name := d.Annotations[ocispec.AnnotationRefName]
				proto := types[strings.SplitN(name, "/", 2)[0]]
				if proto == "" {
					proto = "-"
				}
				conf := d.Annotations[cas.AnnotationConfirmed]
				if len(conf) > 19 {
					conf = conf[:19] + "Z"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, proto, human(size), human(held), conf)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			var disk int64
			for _, n := range unique {
				disk += n
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d names, %s referenced, %s on disk, %s saved by dedup\n", len(descs), human(logical), human(disk), human(logical-disk))
			return nil
		},
	}
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
