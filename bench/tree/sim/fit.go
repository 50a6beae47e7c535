package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
)

// measured is one row of bench/swarm/run.sh's results.tsv: mode, nodes,
// wall seconds (further columns are CPU figures, ignored here).
type measured struct {
	mode string
	n    int
	secs float64
}

func readResults(path string) ([]measured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	defer f.Close()
	var out []measured
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 {
			continue
		}
		if len(fs) < 3 {
			return nil, fmt.Errorf("%s:%d: want MODE N SECONDS", path, line)
		}
		n, err1 := strconv.Atoi(fs[1])
		t, err2 := strconv.ParseFloat(fs[2], 64)
		if err1 != nil || err2 != nil || n < 1 || t <= 0 {
			return nil, fmt.Errorf("%s:%d: want MODE N SECONDS, got %q", path, line, sc.Text())
		}
		out = append(out, measured{fs[0], n, t})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	return out, nil
}

// fit finds, by grid search on the squared relative error, the free
// parameters of the cut-through model (start-up per level) and of the swarm
// model (peers' upload efficiency and start-up), from runs on links of a
// known rate where every link, the server's too, is the same.
func fit(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("sim -fit", flag.ContinueOnError)
	fs.SetOutput(w)
	link := fs.Float64("link-mbs", 0, "measured rate of one link, MB/s (required)")
	sizeMiB := fs.Float64("size-mib", 0, "image data per node, MiB (required)")
	chunkMiB := fs.Float64("chunk-mib", 1, "chunk size, MiB")
	fanout := fs.Int("fanout", 2, "the tree's fan-out in the runs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *link <= 0 || *sizeMiB <= 0 {
		return errors.New("usage: sim -fit -link-mbs R -size-mib S [-fanout F] RESULTS.tsv")
	}
	rows, err := readResults(fs.Arg(0))
	if err != nil {
		return err
	}
	r, size, chunk := *link*1e6, *sizeMiB*(1<<20), *chunkMiB*(1<<20)
	by := map[string][]measured{}
	for _, m := range rows {
		by[m.mode] = append(by[m.mode], m)
	}
	for _, ms := range by {
		sort.Slice(ms, func(i, j int) bool { return ms[i].n < ms[j].n })
	}
	one := 0.0
	for _, m := range by["server"] {
		if m.n == 1 {
			one = m.secs
		}
	}
	if one == 0 {
		return errors.New("results: no server run with 1 node (the reference)")
	}
	fmt.Fprintf(w, "link %.2f MB/s, image %.0f MiB: one node alone measured %.1f s (link-bound: %.1f s)\n\n", *link, *sizeMiB, one, size/r)
	sse := func(ms []measured, model func(n int) float64) float64 {
		e := 0.0
		for _, m := range ms {
			d := (model(m.n) - m.secs) / m.secs
			e += d * d
		}
		return e
	}
	show := func(name string, ms []measured, model func(n int) float64) {
		fmt.Fprintf(w, "| %s N | measured | model | x one node (measured / model) |\n|---|---|---|---|\n", name)
		for _, m := range ms {
			fmt.Fprintf(w, "| %d | %.1f s | %.1f s | %.2fx / %.2fx |\n", m.n, m.secs, model(m.n), m.secs/one, model(m.n)/one)
		}
		fmt.Fprintln(w)
	}
	if ms := by["server"]; len(ms) > 0 {
		// A fixed start-up, then the server's link shared by all.
		best, bs := math.Inf(1), 0.0
		for s := 0.0; s <= 30; s += 0.05 {
			if e := sse(ms, func(n int) float64 { return s + float64(n)*size/r }); e < best {
				best, bs = e, s
			}
		}
		fmt.Fprintf(w, "server only: start-up %.2f s\n\n", bs)
		show("server", ms, func(n int) float64 { return bs + float64(n)*size/r })
	}
	if ms := by["tree"]; len(ms) > 0 {
		best, bs := math.Inf(1), 0.0
		model := func(s float64) func(int) float64 {
			return func(n int) float64 {
				if n == 1 { // the one node is the server's only child
					t, _ := cutThrough(1, size, r, r, r, 1, s, chunk)
					return t
				}
				t, _ := cutThrough(n, size, r, r, r, *fanout, s, chunk)
				return t
			}
		}
		for s := 0.0; s <= 30; s += 0.05 {
			if e := sse(ms, model(s)); e < best {
				best, bs = e, s
			}
		}
		fmt.Fprintf(w, "cut-through tree, fan-out %d: start-up per level %.2f s (sim -startup-s)\n\n", *fanout, bs)
		show("tree", ms, model(bs))
	}
	if ms := by["swarm"]; len(ms) > 0 {
		best, be, bs := math.Inf(1), 0.0, 0.0
		for eff := 0.01; eff <= 2.0001; eff += 0.01 {
			for s := 0.0; s <= 30; s += 0.1 {
				if e := sse(ms, func(n int) float64 { return swarm(n, size, r, r, r, eff, s) }); e < best {
					best, be, bs = e, eff, s
				}
			}
		}
		fmt.Fprintf(w, "swarm: peers' upload efficiency %.2f, start-up %.1f s (sim -swarm-eff %.2f -swarm-startup-s %.1f)\n\n", be, bs, be, bs)
		show("swarm", ms, func(n int) float64 { return swarm(n, size, r, r, r, be, bs) })
	}
	return nil
}
