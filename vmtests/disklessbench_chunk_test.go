//go:build vmtest

package vmtests

import (
	"strings"
	"testing"
)

// IMPRINT_BENCH_CHUNK: sizes by spaces or commas become images named by
// size (the default size keeps the deployed image); a wrong one is named.
func TestBenchChunkSizesParsesAndNamesTheWrongOne(t *testing.T) {
	tests := []struct {
		in      string
		images  string // image names, in order
		wantErr string
	}{
		{"", "debian", ""},
		{"1M 256K", "debian debian-c256k", ""},
		{"128K,1M, 64K", "debian-c128k debian debian-c64k", ""},
		{"1M 300K", "", `"300K" is not a chunk size`},
		{"1M lots", "", `"lots" is not a chunk size`},
		{"256K 256K", "", `"256K" given twice`},
	}
	for _, tc := range tests {
		got, err := benchChunkSizes(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), DisklessBenchChunkEnv) {
				t.Errorf("%q: error %v, want one with %q and the variable's name", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		var names []string
		for _, c := range got {
			names = append(names, c.image)
		}
		if strings.Join(names, " ") != tc.images {
			t.Errorf("%q: images %q, want %q", tc.in, names, tc.images)
		}
	}
}
