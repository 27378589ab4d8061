package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

type row struct {
	scenario    string
	system      string // "" for a detail row of the system above
	metric      string
	unit        string
	prefix      string // ">" for a value that was cut short
	vals        []float64
	rss         int64
	lowerBetter bool

	hasRatio  bool
	ratioV    float64
	ratioVs   string
	hasTarget bool
	target    string
	ok        bool
	note      string
}

// ratio sets the row's ratio to base and, when tgt > 0, its target:
// ratio >= tgt when higherBetter, else ratio <= tgt.
func (r *row) ratio(base float64, vs string, tgt float64, higherBetter bool) {
	if base <= 0 || len(r.vals) == 0 {
		return
	}
	r.hasRatio, r.ratioV, r.ratioVs = true, median(r.vals)/base, vs
	if tgt > 0 {
		r.hasTarget = true
		if higherBetter {
			r.target = fmt.Sprintf(">=%.2fx", tgt)
			r.ok = r.ratioV >= tgt
		} else {
			r.target = fmt.Sprintf("<=%.2fx", tgt)
			r.ok = r.ratioV <= tgt
		}
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func fmtVal(unit string, v float64) string {
	switch unit {
	case "GB/s", "s":
		return fmt.Sprintf("%.2f", v)
	case "x blob":
		return fmt.Sprintf("%.3fx", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func (b *bench) printTable(w io.Writer, took time.Duration) {
	o := b.o
	fmt.Fprintf(w, "\nClowder benchmark: %s; runs=%d, blob %s, upstream link %s/s, %s; took %s\n",
		hostInfo(), o.runs, human(o.size), humanRate(o.rate), time.Now().Format("2006-01-02 15:04"), took.Round(time.Second))
	fmt.Fprintf(w, "median of runs [min..max]; ratio = median / baseline median from this run\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tSYSTEM\tMEDIAN\tUNIT\t[MIN..MAX]\tRATIO\tTARGET\tPEAK RSS\tNOTE")
	last := ""
	misses := 0
	for _, r := range b.rows {
		scen := r.scenario
		if scen == last {
			scen = ""
		}
		last = r.scenario
		what := r.system
		if r.system == "" {
			what = "  " + r.metric
			if r.metric == "" {
				what = "  ''"
			}
		} else if r.metric != "" {
			what += " " + r.metric
		}
		med := r.prefix + fmtVal(r.unit, median(r.vals))
		spread := ""
		if len(r.vals) > 1 {
			spread = fmt.Sprintf("[%s..%s]", fmtVal(r.unit, slices.Min(r.vals)), fmtVal(r.unit, slices.Max(r.vals)))
		}
		ratio := ""
		if r.hasRatio {
			ratio = fmt.Sprintf("%s%.2fx %s", r.prefix, r.ratioV, r.ratioVs)
		}
		tgt := ""
		if r.hasTarget {
			tgt = r.target + " ok"
			if !r.ok {
				tgt = r.target + " MISS"
				misses++
			}
		}
		rss := ""
		if r.rss > 0 {
			rss = mib(r.rss)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", scen, what, med, r.unit, spread, ratio, tgt, rss, r.note)
	}
	tw.Flush()
	for _, n := range b.notes {
		fmt.Fprintln(w, "note:", n)
	}
	if misses > 0 {
		fmt.Fprintf(w, "\n%d target(s) missed.\n", misses)
	} else if slices.ContainsFunc(b.rows, func(r row) bool { return r.hasTarget }) {
		fmt.Fprintln(w, "\nall targets met.")
	}
}
