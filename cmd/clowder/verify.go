package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/clowder-dev/clowder/cas"
	"github.com/clowder-dev/clowder/config"
)

func newVerifyCmd(g *globalFlags) *cobra.Command {
	var repair bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Re-hash every blob in the cache; report (and with --repair remove) damaged ones",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			var good, bad int
			var bytes int64
			verify := func(fn func(cas.VerifyResult)) error {
				if cfg.Storage.Type == config.StorageS3 {
					// The bucket's blobs, streamed and hashed.
					st, err := openStore(cfg, false)
					if err != nil {
						return err
					}
					return cas.VerifyStore(cmd.Context(), st.s3, repair, fn)
				}
				store, err := cas.OpenLayout(cfg.Root)
				if err != nil {
					return err
				}
				return store.Verify(cmd.Context(), repair, fn)
			}
			err = verify(func(r cas.VerifyResult) {
				if r.Err == nil {
					good++
					bytes += r.Size
					return
				}
				bad++
				action := ""
				if r.Removed {
					action = " (removed)"
				}
				fmt.Fprintf(out, "BAD %s: %v%s\n", r.Path, r.Err, action)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%d blobs ok (%d bytes), %d bad\n", good, bytes, bad)
			if bad > 0 && !repair {
				return fmt.Errorf("%d damaged blobs; run clowder verify --repair to remove them (they refill on next request)", bad)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "remove damaged blobs so they are fetched again")
	return cmd
}
