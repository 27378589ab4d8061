package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/clowder-dev/clowder/config"
)

// globalFlags are accepted by every subcommand.
type globalFlags struct {
	configFile string
	root       string
	logLevel   string
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	cmd := &cobra.Command{
		Use:           "clowder",
		Short:         "A pull-through caching registry proxy for container images and AI models",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&g.configFile, "config", "", "config file (default: $CLOWDER_CONFIG, else the embedded default)")
	pf.StringVar(&g.root, "root", "", "cache directory (an OCI image layout); overrides the config's root")
	pf.StringVar(&g.logLevel, "log-level", "", "debug, info, warn or error; overrides the config's log_level")
	cmd.AddCommand(newServeCmd(g), newPullCmd(g), newVerifyCmd(g), newPathCmd(g), newCheckoutCmd(g), newLsCmd(g), newExportCmd(g), newImportCmd(g), newPushCmd(g), newRmCmd(g), newGCCmd(g), newVersionCmd(), newConfigCmd(g))
	return cmd
}

// loadConfig reads --config, else $CLOWDER_CONFIG, else the embedded
// default, then applies --root.
func (g *globalFlags) loadConfig() (*config.Config, error) {
	path := g.configFile
	if path == "" {
		path = os.Getenv("CLOWDER_CONFIG")
	}
	var (
		c   *config.Config
		err error
	)
	if path != "" {
		c, err = config.Load(path)
	} else {
		c = config.Default()
	}
	if err != nil {
		return nil, err
	}
	if g.root != "" {
		c.Root = g.root
	}
	if g.logLevel != "" {
		c.LogLevel = g.logLevel
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// app loads the config and wires an app that reads an existing cache
// (an s3 bucket must exist), logging warnings only.
func (g *globalFlags) app() (*app, error) { return g.wire(false) }

// appCreating is app for commands that fill the cache (import): a missing s3
// bucket is created.
func (g *globalFlags) appCreating() (*app, error) { return g.wire(true) }

func (g *globalFlags) wire(create bool) (*app, error) {
	cfg, err := g.loadConfig()
	if err != nil {
		return nil, err
	}
	if cfg.LogLevel == "info" && g.logLevel == "" {
		cfg.LogLevel = "warn"
	}
	return wireApp(cfg, os.Stderr, create)
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func newConfigCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Configuration helpers"}
	cmd.AddCommand(&cobra.Command{
		Use:   "default",
		Short: "Print the embedded default configuration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(config.DefaultYAML())
			return err
		},
	}, &cobra.Command{
		Use:   "check",
		Short: "Load and validate the configuration (--config, $CLOWDER_CONFIG or the default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.loadConfig()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: listen %s, root %s, %d upstreams\n", c.Listen, c.Root, len(c.Upstreams))
			return nil
		},
	})
	return cmd
}
