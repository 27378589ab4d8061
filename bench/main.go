// Command bench measures Clowder against nginx and the CNCF distribution
// registry on loopback: warm blob throughput, cold fan-out from a throttled
// upstream, cold image pull, manifest requests per second, warm throughput
// on the s3 backend (SeaweedFS) and Clowder's peak RSS. `make bench` runs
// it; see bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	size        int64
	runs        int
	conc        []int
	fanout      int
	rate        int64
	layers      int
	layerSize   int64
	pullConc    int
	rpsDur      time.Duration
	rpsConc     int
	distCut     float64
	only        map[string]bool
	clowderBin  string
	clowderAlt  string
	registryBin string
	weedBin     string
	dir         string
	keep        bool
	verify      bool
	timeout     time.Duration
	verbose     bool
}

func main() {
	// Helper mode: a minimal Go file server (see gofile.go), run as a child.
	if len(os.Args) > 1 && os.Args[1] == "serve-file" {
		serveFileMain(os.Args[2:])
		return
	}
	o, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	os.Exit(run(o))
}

func parseFlags() (*options, error) {
	o := &options{}
	var size, rate, layerSize, conc, only string
	var quick bool
	flag.StringVar(&size, "size", "1GiB", "blob size for the warm, fan-out and s3 scenarios")
	flag.BoolVar(&quick, "quick", false, "quick run: -size 256MiB -layer-size 32MiB -rps-duration 1s (explicit flags win)")
	flag.IntVar(&o.runs, "runs", 3, "runs per scenario and system; the table shows the median")
	flag.StringVar(&conc, "conc", "1,8", "concurrent clients for warm blob throughput (warm, s3)")
	flag.IntVar(&o.fanout, "fanout", 32, "clients in the cold fan-out scenario")
	flag.StringVar(&rate, "rate", "200MB", "upstream link rate per second, shared by all upstream connections")
	flag.IntVar(&o.layers, "layers", 8, "layers in the cold image pull")
	flag.StringVar(&layerSize, "layer-size", "64MiB", "size of each layer in the cold image pull")
	flag.IntVar(&o.pullConc, "pull-conc", 3, "parallel layer downloads in the image pull (docker/containerd default: 3)")
	flag.DurationVar(&o.rpsDur, "rps-duration", 3*time.Second, "load duration per manifest measurement")
	flag.IntVar(&o.rpsConc, "rps-conc", 32, "goroutines (keep-alive connections) for manifest load")
	flag.Float64Var(&o.distCut, "dist-cut", 3, "stop distribution's fan-out after this many times the direct download time (it fetches once per client)")
	flag.StringVar(&only, "only", "warm,fanout,image,manifest,s3", "scenarios to run")
	flag.StringVar(&o.clowderAlt, "clowder-alt", "", "a second clowder binary to measure in the warm scenario (e.g. a sendfile build)")
	flag.StringVar(&o.dir, "dir", "", "parent of the temp directory (default $TMPDIR)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp directory (logs, configs)")
	flag.BoolVar(&o.verify, "verify", false, "sha256 every body clients receive (costs CPU)")
	flag.DurationVar(&o.timeout, "timeout", 20*time.Minute, "abort the whole run after this long")
	flag.BoolVar(&o.verbose, "v", false, "progress detail")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if quick {
		if !set["size"] {
			size = "256MiB"
		}
		if !set["layer-size"] {
			layerSize = "32MiB"
		}
		if !set["rps-duration"] {
			o.rpsDur = time.Second
		}
	}
	var err error
	if o.size, err = parseSize(size); err != nil || o.size <= 0 {
		return nil, fmt.Errorf("-size %q: bad size", size)
	}
	if o.layerSize, err = parseSize(layerSize); err != nil || o.layerSize <= 0 {
		return nil, fmt.Errorf("-layer-size %q: bad size", layerSize)
	}
	if o.rate, err = parseSize(strings.TrimSuffix(rate, "/s")); err != nil || o.rate <= 0 {
		return nil, fmt.Errorf("-rate %q: bad rate", rate)
	}
	for _, c := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-conc %q: bad list", conc)
		}
		o.conc = append(o.conc, n)
	}
	o.only = map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		s = strings.TrimSpace(s)
		switch s {
		case "warm", "fanout", "image", "manifest", "s3":
			o.only[s] = true
		case "":
		default:
			return nil, fmt.Errorf("-only: unknown scenario %q", s)
		}
	}
	if o.runs < 1 || o.fanout < 1 || o.layers < 1 || o.pullConc < 1 || o.rpsConc < 1 {
		return nil, errors.New("counts must be >= 1")
	}
	o.clowderBin = os.Getenv("CLOWDER_BIN")
	if o.clowderBin == "" {
		o.clowderBin = "bin/clowder"
	}
	if o.clowderBin, err = filepath.Abs(o.clowderBin); err != nil {
		return nil, err
	}
	if _, err := os.Stat(o.clowderBin); err != nil {
		return nil, fmt.Errorf("clowder binary: %v (run `make build` or set CLOWDER_BIN)", err)
	}
	o.registryBin = os.Getenv("REGISTRY")
	if o.registryBin == "" {
		home, _ := os.UserHomeDir()
		o.registryBin = filepath.Join(home, ".cache/clowder/tools/bin/registry")
	}
	o.weedBin = os.Getenv("WEED")
	if o.weedBin == "" {
		home, _ := os.UserHomeDir()
		o.weedBin = filepath.Join(home, ".cache/clowder/tools/bin/weed")
	}
	return o, nil
}

// parseSize reads 1GiB, 256MiB, 64KiB (binary), 200MB, 1GB (decimal), 512M,
// 1G (binary) or a plain byte count.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suf string
		mul int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}}
	mul := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suf) {
			s, mul = strings.TrimSuffix(s, u.suf), u.mul
			break
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, err
	}
	return int64(f * float64(mul)), nil
}

func run(o *options) int {
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	go func() {
		if s, ok := <-sigc; ok {
			logf("bench: %v: stopping", s)
			cancel()
		}
	}()
	defer signal.Stop(sigc)

	b := &bench{o: o}
	defer killAll()
	err := b.setup(ctx)
	if err == nil {
		for _, sc := range []struct {
			name string
			fn   func(context.Context) error
		}{{"warm", b.warm}, {"fanout", b.fanout}, {"image", b.image}, {"manifest", b.manifest}, {"s3", b.s3}} {
			if !o.only[sc.name] {
				continue
			}
			logf("== %s", sc.name)
			if err = sc.fn(ctx); err != nil {
				err = fmt.Errorf("%s: %w", sc.name, err)
				break
			}
		}
	}
	killAll()
	b.cleanup()
	b.printTable(os.Stdout, time.Since(began))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: FAILED:", err)
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench: (aborted: -timeout or signal)")
		}
		return 1
	}
	return 0
}

var logOut io.Writer = os.Stderr

func logf(format string, args ...any) {
	fmt.Fprintf(logOut, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (b *bench) vlogf(format string, args ...any) {
	if b.o.verbose {
		logf(format, args...)
	}
}

func hostInfo() string {
	cpu := ""
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "model name") {
				if _, v, ok := strings.Cut(l, ":"); ok {
					cpu = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s", runtime.NumCPU(), cpu, runtime.Version())
}
