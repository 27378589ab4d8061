package main

import (
	"context"
	"time"

	"github.com/clowder-dev/clowder/cas"
)

// janitor runs every janitor_interval while serving: it writes the names
// served since the last pass to index.json as last-use times, and when the
// names reference more than max_size it evicts whole names, least recently
// used first (pinned names never), then collects their blobs.
func janitor(ctx context.Context, a *app) {
	t := time.NewTicker(time.Duration(a.cfg.JanitorInterval))
	defer t.Stop()
	j := &janitorState{}
	for {
		select {
		case <-ctx.Done():
			j.pass(context.Background(), a) // keep the last-use times
			return
		case <-t.C:
			j.pass(ctx, a)
		}
	}
}

// gcGrace keeps blobs younger than this from an automatic collection: a
// blob a fill just committed is referenced by its (already named) manifest,
// and seconds cover names being written.
const gcGrace = 10 * time.Second

type janitorState struct {
	sweepAfter time.Time // evicted names' blobs are collected after this
}

func (j *janitorState) pass(ctx context.Context, a *app) {
	if used := a.proxy.TakeUsed(); len(used) > 0 {
		set := map[string]map[string]string{}
		for n, at := range used {
			set[n] = map[string]string{cas.AnnotationLastUsed: at.UTC().Format(time.RFC3339Nano)}
		}
		if err := a.annotate(ctx, set); err != nil {
			a.log.Warn().Err(err).Msg("recording last use")
		}
	}
	if a.s3 != nil {
		// Leases whose owner died and whose blob nobody missed since.
		if _, err := a.s3.SweepLeases(ctx, time.Minute); err != nil {
			a.log.Warn().Err(err).Msg("sweeping fill leases")
		}
	}
	max := int64(a.cfg.MaxSize)
	if max <= 0 {
		return
	}
	j.collect(ctx, a)
	evict, after, err := cas.EvictPlan(ctx, a.store, max, a.cfg.IsPinned)
	if err != nil {
		a.log.Warn().Err(err).Msg("max_size check")
		return
	}
	if len(evict) == 0 {
		return
	}
	for _, n := range evict {
		if err := a.store.Untag(ctx, n); err != nil {
			a.log.Warn().Err(err).Str("name", n).Msg("evicting")
			continue
		}
		a.log.Info().Str("name", n).Msg("evicted (max_size, least recently used)")
	}
	a.log.Info().Int("evicted", len(evict)).Int64("referenced_bytes", after).Int64("max_size", max).Msg("max_size enforced")
	j.sweepAfter = time.Now().Add(gcGrace)
}

// collect sweeps the blobs of evicted names once they are past the grace.
func (j *janitorState) collect(ctx context.Context, a *app) {
	if j.sweepAfter.IsZero() || time.Now().Before(j.sweepAfter) {
		return
	}
	roots, err := hostedLinks(a.local.Root())
	if err != nil {
		a.log.Warn().Err(err).Msg("gc")
		return
	}
	res, err := a.gc(ctx, cas.GCOptions{Roots: roots, Grace: gcGrace})
	if err != nil {
		a.log.Warn().Err(err).Msg("gc")
		return
	}
	j.sweepAfter = time.Time{}
	a.log.Info().Int("swept", res.Swept).Int64("swept_bytes", res.SweptBytes).Msg("collected evicted blobs")
}
