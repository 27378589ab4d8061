package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

type system struct {
	name string
	url  string // full URL of the object
	p    *proc  // for peak RSS, when the process is this scenario's own
}

// warm: blob throughput from a warm cache, c clients each reading the whole
// blob at once; aggregate client-side GB/s.
func (b *bench) warm(ctx context.Context) error {
	o := b.o
	root := filepath.Join(b.tmp, "clowder-warm")
	b.up.setRate(0)
	logf("warming clowder (one GET through it, upstream unthrottled)")
	if err := b.primeClowder(ctx, "warm-fill", root, "", fileExists(clowderBlobPath(root, b.big))); err != nil {
		return fmt.Errorf("warming clowder: %w", err)
	}

	ngx, ngxOff, ngxOn, err := b.startNginx(ctx, b.data)
	if err != nil {
		return err
	}
	defer ngx.stop()
	gb, gbURL, err := b.startGoFile(ctx, "buf1m", b.bigPath)
	if err != nil {
		return err
	}
	defer gb.stop()
	gs, gsURL, err := b.startGoFile(ctx, "sendfile", b.bigPath)
	if err != nil {
		return err
	}
	defer gs.stop()
	hx := filepath.Base(b.bigPath)

	for ci, c := range o.conc {
		scen, reps := b.warmScenario("warm", c)
		logf("-- %s", scen)
		// A fresh clowder (and distribution) per scenario, on the warm root,
		// so VmHWM is this scenario's.
		cp, cbase, err := b.startClowder(ctx, o.clowderBin, fmt.Sprintf("warm-c%d", c), root)
		if err != nil {
			return err
		}
		var ap *proc
		var abase string
		if o.clowderAlt != "" {
			if ap, abase, err = b.startClowder(ctx, o.clowderAlt, fmt.Sprintf("alt-warm-c%d", c), root); err != nil {
				cp.stop()
				return err
			}
		}
		dp, dbase, err := b.startDistribution(ctx, fmt.Sprintf("warm-c%d", c), b.distHosted, "")
		if err != nil {
			cp.stop()
			ap.stop()
			return err
		}
		systems := []system{
			{"nginx sendfile=off", ngxOff + "/" + hx, nil},
			{"nginx sendfile=on", ngxOn + "/" + hx, nil},
			{"distribution", dbase + "/v2/bench/big/blobs/" + b.big, dp},
			{"go io.CopyBuffer 1MiB", gbURL + "/blob", nil},
			{"go io.Copy sendfile", gsURL + "/blob", nil},
			{"clowder", cbase + "/v2/up/bench/big/blobs/" + b.big, cp},
		}
		if ap != nil {
			systems = append(systems, system{"clowder-alt", abase + "/v2/up/bench/big/blobs/" + b.big, ap})
		}
		b.up.reset()
		vals, rss, err := b.measureWarm(ctx, systems, c, reps, ci == 0)
		cp.stop()
		ap.stop()
		dp.stop()
		if err != nil {
			return err
		}
		if n := b.up.counts().blobGets; n != 0 {
			b.notes = append(b.notes, fmt.Sprintf("%s: clowder went upstream %d times (cache not warm?)", scen, n))
		}
		best := "nginx sendfile=off"
		if median(vals["nginx sendfile=on"]) > median(vals[best]) {
			best = "nginx sendfile=on"
		}
		for _, s := range systems {
			r := row{scenario: scen, system: s.name, unit: "GB/s", vals: vals[s.name], rss: rss[s.name]}
			if s.name == best {
				r.note = "nginx-best"
			}
			if s.name == "clowder" || s.name == "clowder-alt" {
				r1 := r
				r1.ratio(median(vals[best]), "nginx-best", 0.9, true)
				b.rows = append(b.rows, r1)
				r2 := r
				r2.rss = 0
				r2.ratio(median(vals["distribution"]), "distribution", 1.0, true)
				b.rows = append(b.rows, r2)
				continue
			}
			b.rows = append(b.rows, r)
		}
	}
	return nil
}

// warmScenario names a warm-throughput scenario for c clients and returns
// how many sequential rounds make a run move at least 4 GiB (about a second).
func (b *bench) warmScenario(prefix string, c int) (string, int) {
	scen := fmt.Sprintf("%s %s c=%d", prefix, human(b.o.size), c)
	reps := max(1, int((4<<30+int64(c)*b.o.size-1)/(int64(c)*b.o.size)))
	if reps > 1 {
		scen += fmt.Sprintf(" x%d", reps)
	}
	return scen, reps
}

// primeClowder starts a clowder on root (extra: config for
// startClowderWith), GETs the big blob once through it, waits until ready()
// (the copy it must leave behind exists) and stops it.
func (b *bench) primeClowder(ctx context.Context, tag, root, extra string, ready func() bool) error {
	p, base, err := b.startClowderWith(ctx, b.o.clowderBin, tag, root, extra)
	if err != nil {
		return err
	}
	defer p.stop()
	res, _ := parallelGet(ctx, base+"/v2/up/bench/big/blobs/"+b.big, 1, b.o.size, false)
	if err := firstErr(res); err != nil {
		return err
	}
	if !waitFor(ctx, 2*time.Minute, ready) {
		return fmt.Errorf("blob not stored within 2m:\n%s", p.tail())
	}
	return nil
}

// measureWarm runs -runs runs of reps rounds of c clients GETting the big
// blob from each system, systems interleaved within a run (after one untimed
// GET each when warmUp: page cache, connection paths). It returns GB/s per
// run and the peak RSS of the systems' own processes, by system name.
func (b *bench) measureWarm(ctx context.Context, systems []system, c, reps int, warmUp bool) (map[string][]float64, map[string]int64, error) {
	if warmUp {
		for _, s := range systems {
			res, _ := parallelGet(ctx, s.url, 1, b.o.size, false)
			if err := firstErr(res); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", s.name, err)
			}
		}
	}
	vals := map[string][]float64{}
	for run := range b.o.runs {
		for _, s := range systems {
			var wall time.Duration
			for range reps {
				res, w := parallelGet(ctx, s.url, c, b.o.size, b.o.verify)
				if err := firstErr(res); err != nil {
					return nil, nil, fmt.Errorf("%s: %w", s.name, err)
				}
				if b.o.verify {
					for _, r := range res {
						if r.digest != b.big {
							return nil, nil, fmt.Errorf("%s: body hashes to %s", s.name, r.digest)
						}
					}
				}
				wall += w
			}
			gbps := float64(int64(reps*c)*b.o.size) / wall.Seconds() / 1e9
			vals[s.name] = append(vals[s.name], gbps)
			b.vlogf("   run %d %-24s %.2f GB/s", run+1, s.name, gbps)
		}
	}
	rss := map[string]int64{}
	for _, s := range systems {
		if s.p != nil {
			rss[s.name] = s.p.hwm()
		}
	}
	return vals, rss, nil
}

// fanout: fan-out clients GET the same uncached blob at once; the upstream
// link is throttled. Baseline: one direct download at the same throttle.
func (b *bench) fanout(ctx context.Context) error {
	o := b.o
	scen := fmt.Sprintf("cold fan-out %s x%d", human(o.size), o.fanout)
	b.up.setRate(o.rate)
	defer b.up.setRate(0)
	var direct, ctotal, cwarm, cbytes, cttfbMed, cttfbMax, cupDone, cpenult []float64
	var cgets []int64
	var crss int64
	for run := range o.runs {
		b.up.reset()
		res, wall := parallelGet(ctx, b.up.url+"/v2/bench/big/blobs/"+b.big, 1, o.size, false)
		if err := firstErr(res); err != nil {
			return fmt.Errorf("direct: %w", err)
		}
		direct = append(direct, wall.Seconds())

		root := filepath.Join(b.tmp, "clowder-fanout")
		_ = os.RemoveAll(root)
		p, base, err := b.startClowder(ctx, o.clowderBin, fmt.Sprintf("fanout-%d", run), root)
		if err != nil {
			return err
		}
		b.up.reset()
		t0 := time.Now()
		res, wall = parallelGet(ctx, base+"/v2/up/bench/big/blobs/"+b.big, o.fanout, o.size, o.verify)
		cnt := b.up.counts()
		cupDone = append(cupDone, time.Unix(0, b.up.lastByte.Load()).Sub(t0).Seconds())
		var pen []float64
		for _, r := range res {
			pen = append(pen, r.penult.Seconds())
		}
		cpenult = append(cpenult, slices.Max(pen))
		crss = max(crss, p.hwm())
		if err := firstErr(res); err != nil {
			p.stop()
			return fmt.Errorf("clowder: %w", err)
		}
		if o.verify {
			for _, r := range res {
				if r.digest != b.big {
					p.stop()
					return fmt.Errorf("clowder: body hashes to %s", r.digest)
				}
			}
		}
		committed := waitFile(ctx, clowderBlobPath(root, b.big), time.Minute)
		if !committed {
			p.stop()
			return fmt.Errorf("clowder: blob not committed after the fan-out")
		}
		// The same fan-out again, now cached: how long delivering
		// fanout x size takes on this machine with no upstream at all.
		wres, wwall := parallelGet(ctx, base+"/v2/up/bench/big/blobs/"+b.big, o.fanout, o.size, false)
		crss = max(crss, p.hwm())
		p.stop()
		_ = os.RemoveAll(root)
		if err := firstErr(wres); err != nil {
			return fmt.Errorf("clowder (cached): %w", err)
		}
		cwarm = append(cwarm, wwall.Seconds())
		ctotal = append(ctotal, wall.Seconds())
		cbytes = append(cbytes, float64(cnt.blobBytes)/float64(o.size))
		cgets = append(cgets, cnt.blobGets)
		med, mx := ttfbStats(res)
		cttfbMed = append(cttfbMed, med)
		cttfbMax = append(cttfbMax, mx)
		logf("   run %d: direct %.2fs, clowder %.2fs (cached: %.2fs), upstream %.3fx in %d GETs, TTFB med %.0fms max %.0fms", run+1, direct[run], wall.Seconds(), cwarm[run], cbytes[run], cnt.blobGets, med*1000, mx*1000)
	}

	// distribution in proxy mode, once, cut after distCut x the direct time:
	// it fetches the blob once per concurrent client.
	root := filepath.Join(b.tmp, "dist-fanout")
	_ = os.RemoveAll(root)
	dp, dbase, err := b.startDistribution(ctx, "fanout", root, b.up.url)
	if err != nil {
		return err
	}
	b.up.reset()
	cut := time.Duration(o.distCut * median(direct) * float64(time.Second))
	dctx, cancel := context.WithTimeout(ctx, cut)
	dres, dwall := parallelGet(dctx, dbase+"/v2/bench/big/blobs/"+b.big, o.fanout, o.size, false)
	cancel()
	dcnt := b.up.counts()
	drss := dp.hwm()
	dp.stop()
	_ = os.RemoveAll(root)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	done := 0
	for _, r := range dres {
		if r.err == nil {
			done++
		}
	}
	dmed, dmax := ttfbStats(dres)
	logf("   distribution: %d/%d done in %.2fs, upstream %.2fx in %d GETs", done, o.fanout, dwall.Seconds(), float64(dcnt.blobBytes)/float64(o.size), dcnt.blobGets)

	dir := row{scenario: scen, system: "direct (1 client)", unit: "s", vals: direct, note: fmt.Sprintf("upstream link %s/s", humanRate(o.rate))}
	b.rows = append(b.rows, dir)
	r := row{scenario: scen, system: "clowder", unit: "s", vals: ctotal, rss: crss, lowerBetter: true}
	r.ratio(median(direct), "direct", 1.1, false)
	b.rows = append(b.rows, r)
	ub := row{scenario: scen, system: "", metric: "upstream bytes", unit: "x blob", vals: cbytes, note: fmt.Sprintf("GETs per run %v", cgets)}
	ub.target = "==1.00x"
	ub.ok = slices.Max(cbytes) == 1 && slices.Max(cgets) == 1
	ub.hasTarget = true
	b.rows = append(b.rows, ub)
	b.rows = append(b.rows, row{scenario: scen, system: "", metric: "TTFB median", unit: "ms", vals: scale(cttfbMed, 1000)})
	b.rows = append(b.rows, row{scenario: scen, system: "", metric: "TTFB max", unit: "ms", vals: scale(cttfbMax, 1000)})
	b.rows = append(b.rows, row{scenario: scen, system: "", metric: "upstream done at", unit: "s", vals: cupDone, note: "when the upstream sent its last byte"})
	b.rows = append(b.rows, row{scenario: scen, system: "", metric: "size-1 bytes at", unit: "s", vals: cpenult, note: "last client to have all but the last byte (held until verified+committed)"})
	cw := row{scenario: scen, system: "", metric: "same GETs, cached", unit: "s", vals: cwarm, lowerBetter: true, note: "delivery floor on this host (no upstream)"}
	cw.ratio(median(direct), "direct", 0, false)
	b.rows = append(b.rows, cw)
	rs := row{scenario: scen, system: "", metric: "peak RSS", unit: "MiB", vals: []float64{float64(crss) / (1 << 20)}, target: "<100 MiB", hasTarget: true, ok: crss < 100<<20}
	b.rows = append(b.rows, rs)

	dsys := "distribution proxy"
	dr := row{scenario: scen, system: dsys, unit: "s", vals: []float64{dwall.Seconds()}, rss: drss, lowerBetter: true}
	if done < o.fanout {
		dr.note = fmt.Sprintf("CUT at %.0fx direct: %d/%d clients done", o.distCut, done, o.fanout)
		dr.prefix = ">"
	}
	dr.ratio(median(direct), "direct", 0, false)
	b.rows = append(b.rows, dr)
	pre := ""
	if done < o.fanout {
		pre = ">="
	}
	b.rows = append(b.rows, row{scenario: scen, system: "", metric: "upstream bytes", unit: "x blob", prefix: pre, vals: []float64{float64(dcnt.blobBytes) / float64(o.size)}, note: fmt.Sprintf("%d GETs, %d HEADs", dcnt.blobGets, dcnt.blobHeads)})
	b.rows = append(b.rows, row{scenario: scen, system: "", metric: "TTFB median/max", unit: "ms", vals: []float64{dmed * 1000}, note: fmt.Sprintf("max %.0f ms", dmax*1000)})
	return nil
}

// image: a cold pull (manifest, config, layers with pullConc parallel
// downloads) through each system vs straight from the throttled upstream.
func (b *bench) image(ctx context.Context) error {
	o := b.o
	scen := fmt.Sprintf("cold pull %dx%s", o.layers, human(o.layerSize))
	b.up.setRate(o.rate)
	defer b.up.setRate(0)
	var direct, cl, di, cup, dup, cwait, dwait []float64
	var crss, drss int64
	total := float64(o.layers) * float64(o.layerSize)
	for run := range o.runs {
		b.up.reset()
		t, _, _, err := pullImage(ctx, b.up.url, "bench/img", "v1", o.pullConc)
		if err != nil {
			return fmt.Errorf("direct: %w", err)
		}
		direct = append(direct, t.Seconds())

		root := filepath.Join(b.tmp, "clowder-image")
		_ = os.RemoveAll(root)
		p, base, err := b.startClowder(ctx, o.clowderBin, fmt.Sprintf("image-%d", run), root)
		if err != nil {
			return err
		}
		b.up.reset()
		t, _, w, err := pullImage(ctx, base, "up/bench/img", "v1", o.pullConc)
		cwait = append(cwait, w.Seconds())
		crss = max(crss, p.hwm())
		p.stop()
		_ = os.RemoveAll(root)
		if err != nil {
			return fmt.Errorf("clowder: %w", err)
		}
		cl = append(cl, t.Seconds())
		cup = append(cup, float64(b.up.counts().blobBytes)/total)

		root = filepath.Join(b.tmp, "dist-image")
		_ = os.RemoveAll(root)
		dp, dbase, err := b.startDistribution(ctx, fmt.Sprintf("image-%d", run), root, b.up.url)
		if err != nil {
			return err
		}
		b.up.reset()
		t, _, w, err = pullImage(ctx, dbase, "bench/img", "v1", o.pullConc)
		dwait = append(dwait, w.Seconds())
		drss = max(drss, dp.hwm())
		dp.stop()
		_ = os.RemoveAll(root)
		if err != nil {
			return fmt.Errorf("distribution: %w", err)
		}
		di = append(di, t.Seconds())
		dup = append(dup, float64(b.up.counts().blobBytes)/total)
		logf("   run %d: direct %.2fs, clowder %.2fs, distribution %.2fs", run+1, direct[run], cl[run], di[run])
	}
	b.rows = append(b.rows, row{scenario: scen, system: "direct (1 client)", unit: "s", vals: direct, note: fmt.Sprintf("%d parallel layer GETs", o.pullConc)})
	r := row{scenario: scen, system: "clowder", unit: "s", vals: cl, rss: crss, lowerBetter: true, note: fmt.Sprintf("upstream %.2fx; last-byte waits %.2fs summed", median(cup), median(cwait))}
	r.ratio(median(direct), "direct", 1.1, false)
	b.rows = append(b.rows, r)
	d := row{scenario: scen, system: "distribution proxy", unit: "s", vals: di, rss: drss, lowerBetter: true, note: fmt.Sprintf("upstream %.2fx; last-byte waits %.2fs summed", median(dup), median(dwait))}
	d.ratio(median(direct), "direct", 0, false)
	b.rows = append(b.rows, d)
	return nil
}

// manifest: warm manifest HEAD and GET by tag per second.
func (b *bench) manifest(ctx context.Context) error {
	o := b.o
	b.up.setRate(0)
	root := filepath.Join(b.tmp, "clowder-manifest")
	_ = os.RemoveAll(root)
	cp, cbase, err := b.startClowder(ctx, o.clowderBin, "manifest", root)
	if err != nil {
		return err
	}
	defer cp.stop()
	dp, dbase, err := b.startDistribution(ctx, "manifest", b.distHosted, "")
	if err != nil {
		return err
	}
	defer dp.stop()
	curl := cbase + "/v2/up/bench/small/manifests/v1"
	durl := dbase + "/v2/bench/small/manifests/v1"
	c := newClient(1)
	for _, u := range []string{curl, durl} {
		if err := oneRequest(ctx, c, "GET", u); err != nil {
			return err
		}
	}
	b.up.reset()
	vals := map[string][]float64{}
	for run := range o.runs {
		for _, m := range []string{"HEAD", "GET"} {
			for _, s := range []struct{ name, url string }{{"distribution", durl}, {"clowder", curl}} {
				rps, err := rpsLoad(ctx, m, s.url, o.rpsConc, o.rpsDur)
				if err != nil {
					return err
				}
				vals[m+" "+s.name] = append(vals[m+" "+s.name], rps)
				b.vlogf("   run %d %s %s %.0f/s", run+1, m, s.name, rps)
			}
		}
	}
	if cnt := b.up.counts(); cnt.manGets+cnt.manHeads > 0 {
		b.notes = append(b.notes, fmt.Sprintf("manifest: clowder asked the upstream %d times during the load", cnt.manGets+cnt.manHeads))
	}
	crss, drss := cp.hwm(), dp.hwm()
	for _, m := range []string{"HEAD", "GET"} {
		scen := fmt.Sprintf("manifest %s by tag, %d conns", m, o.rpsConc)
		b.rows = append(b.rows, row{scenario: scen, system: "distribution", unit: "req/s", vals: vals[m+" distribution"], rss: drss})
		r := row{scenario: scen, system: "clowder", unit: "req/s", vals: vals[m+" clowder"], rss: crss}
		r.ratio(median(vals[m+" distribution"]), "distribution", 0, true)
		b.rows = append(b.rows, r)
	}
	return nil
}

func ttfbStats(res []getResult) (med, mx float64) {
	var v []float64
	for _, r := range res {
		if r.bytes > 0 {
			v = append(v, r.ttfb.Seconds())
		}
	}
	if len(v) == 0 {
		return 0, 0
	}
	return median(v), slices.Max(v)
}

func scale(v []float64, k float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = x * k
	}
	return out
}

func humanRate(r int64) string {
	if r%1e6 == 0 {
		return fmt.Sprintf("%dMB", r/1e6)
	}
	return human(r)
}
