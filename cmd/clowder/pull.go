package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/clowder-dev/clowder/proxy"
	"github.com/clowder-dev/clowder/upstream"
)

func newPullCmd(g *globalFlags) *cobra.Command {
	var platform string
	cmd := &cobra.Command{
		Use:   "pull REF | hf://[datasets/]ORG/REPO[@REV][:PATH]",
		Short: "Fill the cache with an image or artifact, without a client (air-gap pre-seed)",
		Long: `Pull REF (NAME:TAG or NAME@DIGEST) through the configured upstreams into the cache.
Short names expand the way docker does: alpine:3.20 -> docker.io/library/alpine:3.20.
For an image index, every platform is pulled unless --platform is given.
hf://ORG/REPO[@REV][:PATH] pulls a Hugging Face repo revision (or one file of it);
hf://datasets/ORG/REPO a dataset.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			if cfg.LogLevel == "info" && g.logLevel == "" {
				cfg.LogLevel = "warn"
			}
			a, err := newApp(cfg, os.Stderr)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			var plat *ocispec.Platform
			if platform != "" {
				p, err := parsePlatform(platform)
				if err != nil {
					return err
				}
				plat = &p
			}
			return pull(ctx, a, args[0], plat, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&platform, "platform", "", "only this platform of an image index (os/arch[/variant])")
	return cmd
}

func parsePlatform(s string) (ocispec.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return ocispec.Platform{}, fmt.Errorf("--platform %q: want os/arch[/variant]", s)
	}
	p := ocispec.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// splitRef splits NAME[:TAG][@DIGEST]; the tag defaults to latest.
func splitRef(ref string) (name, tagOrDigest string, err error) {
	if n, d, ok := strings.Cut(ref, "@"); ok {
		name, tagOrDigest = n, d
		if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
			name = name[:i]
		}
	} else {
		name, tagOrDigest = ref, "latest"
		if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
			name, tagOrDigest = ref[:i], ref[i+1:]
		}
	}
	if !proxy.ValidName(name) {
		return "", "", fmt.Errorf("%q is not a valid reference (NAME[:TAG] or NAME@DIGEST, lower-case name)", ref)
	}
	return name, tagOrDigest, nil
}

type puller struct {
	a    *app
	rt   upstream.Route
	plat *ocispec.Platform
	out  io.Writer
	tty  bool
}

func pull(ctx context.Context, a *app, ref string, plat *ocispec.Platform, out io.Writer) error {
	if strings.HasPrefix(ref, "hf://") {
		return pullHF(ctx, a, ref, out)
	}
	name, tag, err := splitRef(ref)
	if err != nil {
		return err
	}
	rt, err := a.router.RouteFull(name)
	if err != nil {
		return err
	}
	if rt.Upstream.Source == nil {
		return fmt.Errorf("upstream %s (type %s) cannot pull OCI references yet", rt.Upstream.Name, rt.Upstream.Type)
	}
	p := &puller{a: a, rt: rt, plat: plat, out: out}
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	m, err := a.proxy.GetManifest(ctx, rt, tag)
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	fmt.Fprintf(out, "%s:%s -> %s (%s)\n", rt.Name, tag, m.Desc.Digest, m.Desc.MediaType)
	if err := p.walk(ctx, m, 0); err != nil {
		return err
	}
	fmt.Fprintf(out, "pulled %s@%s\n", rt.Name, m.Desc.Digest)
	return nil
}

func (p *puller) walk(ctx context.Context, m proxy.Manifest, depth int) error {
	if depth > 4 {
		return fmt.Errorf("manifest %s: nested too deep", m.Desc.Digest)
	}
	var doc struct {
		Manifests []ocispec.Descriptor `json:"manifests"`
		Config    *ocispec.Descriptor  `json:"config"`
		Layers    []ocispec.Descriptor `json:"layers"`
		Blobs     []ocispec.Descriptor `json:"blobs"`
	}
	if err := json.Unmarshal(m.Body, &doc); err != nil {
		return fmt.Errorf("manifest %s: %w", m.Desc.Digest, err)
	}
	for _, c := range doc.Manifests {
		if p.plat != nil && c.Platform != nil && !platformMatch(*c.Platform, *p.plat) {
			continue
		}
		cm, err := p.a.proxy.GetManifest(ctx, p.rt, c.Digest.String())
		if err != nil {
			return fmt.Errorf("child manifest %s: %w", c.Digest, err)
		}
		if c.Platform != nil {
			fmt.Fprintf(p.out, "  %s/%s%s %s\n", c.Platform.OS, c.Platform.Architecture, variant(c.Platform.Variant), c.Digest)
		}
		if err := p.walk(ctx, cm, depth+1); err != nil {
			return err
		}
	}
	var blobs []ocispec.Descriptor
	if doc.Config != nil && doc.Config.Digest != "" {
		blobs = append(blobs, *doc.Config)
	}
	blobs = append(blobs, doc.Layers...)
	blobs = append(blobs, doc.Blobs...)
	for _, b := range blobs {
		if err := p.blob(ctx, b.Digest, b.Size); err != nil {
			return err
		}
	}
	return nil
}

func variant(v string) string {
	if v == "" {
		return ""
	}
	return "/" + v
}

func platformMatch(have, want ocispec.Platform) bool {
	return have.OS == want.OS && have.Architecture == want.Architecture && (want.Variant == "" || have.Variant == want.Variant)
}

func (p *puller) blob(ctx context.Context, d digest.Digest, size int64) error {
	b, err := p.a.proxy.GetBlob(ctx, p.rt, d)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	defer b.Close()
	short := d.Encoded()[:12]
	if b.Hit {
		fmt.Fprintf(p.out, "  %s cached (%d bytes)\n", short, b.Size)
		return nil
	}
	r, err := b.Open(ctx, 0, -1)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	defer r.Close()
	var w io.Writer = io.Discard
	if p.tty {
		bar := progressbar.DefaultBytes(b.Size, short)
		w = bar
		defer bar.Close()
	}
	if _, err := io.Copy(w, r); err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	if err := b.Wait(ctx); err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	if !p.tty {
		fmt.Fprintf(p.out, "  %s fetched (%d bytes)\n", short, b.Size)
	}
	return nil
}
