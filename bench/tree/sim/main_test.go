package main

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestSwarmModel(t *testing.T) {
	const size, link = 64 << 20, 2.5e6
	one := size / link
	tests := []struct {
		name      string
		n         int
		eff, want float64 // want: multiple of one node's time
	}{
		{"one node is its link's time", 1, 0.5, 1},
		{"perfect peers keep any swarm at one node's time", 1000, 1, 1},
		{"peers at half use: 16 nodes need 16/(1+8)", 16, 0.5, 16.0 / 9},
		{"no peer upload: the server alone, n times", 8, 0.0001, 8 / (1 + 0.0008)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := swarm(tt.n, size, link, link, link, tt.eff, 0) / one
			if math.Abs(got-tt.want) > 1e-3 {
				t.Errorf("swarm(%d, eff %.2f) = %.4fx one node, want %.4fx", tt.n, tt.eff, got, tt.want)
			}
		})
	}
	if got := swarm(1, size, link, link, link, 1, 5); math.Abs(got-(one+5)) > 1e-9 {
		t.Errorf("start-up not added: %.2f s, want %.2f s", got, one+5)
	}
}

func TestReadResultsRejectsBadLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "results.tsv")
	if err := os.WriteFile(p, []byte("server 1 28.5\nswarm four 30\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := readResults(p)
	if err == nil || !strings.Contains(err.Error(), ":2:") || !strings.Contains(err.Error(), "four") {
		t.Fatalf("readResults = %v, want an error naming line 2 and its text", err)
	}
}

func TestFitRecoversSwarmParameters(t *testing.T) {
	const link, mib = 2.5, 64.0
	size := mib * (1 << 20)
	var b strings.Builder
	b.WriteString("server 1 26.9\n")
	for _, n := range []int{1, 4, 8, 16} {
		s := swarm(n, size, link*1e6, link*1e6, link*1e6, 0.4, 3)
		b.WriteString("swarm " + strconv.Itoa(n) + " " + strconv.FormatFloat(s, 'f', 2, 64) + "\n")
	}
	p := filepath.Join(t.TempDir(), "results.tsv")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := fit([]string{"-link-mbs", "2.5", "-size-mib", "64", p}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "-swarm-eff 0.40 -swarm-startup-s 3.0") {
		t.Fatalf("fit did not recover eff 0.40, start-up 3.0:\n%s", out.String())
	}
}
