package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

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
			u, err := cas.ComputeUsage(cmd.Context(), a.store)
			if err != nil {
				return err
			}
			types := map[string]string{}
			for _, up := range a.cfg.Upstreams {
				types[up.Name] = up.Type
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tPROTOCOL\tSIZE\tHELD\tCONFIRMED")
			for _, n := range u.Names {
				proto := types[strings.SplitN(n.Name, "/", 2)[0]]
				if proto == "" {
					proto = "-"
				}
				conf := n.Desc.Annotations[cas.AnnotationConfirmed]
				if len(conf) > 19 {
					conf = conf[:19] + "Z"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Name, proto, human(n.Size), human(n.Held), conf)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			where := "on disk"
			if a.s3 != nil {
				where = "in the bucket"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d names, %s referenced, %s %s, %s saved by dedup\n", len(u.Names), human(u.Referenced), human(u.Disk), where, human(u.Saved))
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
