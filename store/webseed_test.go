package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestWebSeedTakesExactlyTheRangeAskedFor: a web seed answer is used only
// when it is the range asked for, whole; anything else is an error, never
// other bytes; a status that will not change (403, 405, ...) says "no web
// seed here", a 5xx is a failure.
func TestWebSeedTakesExactlyTheRangeAskedFor(t *testing.T) {
	file := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	const off, n = 1000, 300
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
		want error // nil: the range; errAny: an error that is none of the sentinels
	}{
		{"the range", func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(file))
		}, nil},
		{"not found", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, ErrNotFound},
		{"Range ignored", func(w http.ResponseWriter, r *http.Request) {
			r.Header.Del("Range")
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(file))
		}, ErrRangeIgnored},
		{"another range", func(w http.ResponseWriter, r *http.Request) {
			r.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off+1, off+n))
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(file))
		}, ErrRangeIgnored},
		{"a longer body, no length said", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, len(file)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(file[off : off+n])
			w.(http.Flusher).Flush()
			w.Write([]byte("more"))
		}, ErrRangeIgnored},
		{"a short body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, len(file)))
			w.Header().Set("Content-Length", fmt.Sprint(n))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(file[off : off+n/2])
		}, io.ErrUnexpectedEOF},
		{"a server error", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusInternalServerError) }, errAny},
		{"unavailable for now", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "busy", http.StatusServiceUnavailable) }, errAny},
		{"gone", status(http.StatusGone), ErrNotFound},
		{"a bad request", status(http.StatusBadRequest), ErrNoRange},
		{"unauthorized", status(http.StatusUnauthorized), ErrNoRange},
		{"forbidden (a bucket's missing key)", status(http.StatusForbidden), ErrNoRange},
		{"method not allowed", status(http.StatusMethodNotAllowed), ErrNoRange},
		{"range not satisfiable", status(http.StatusRequestedRangeNotSatisfiable), ErrNoRange},
		{"not implemented", status(http.StatusNotImplemented), ErrNoRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/swarm/data/img/1" {
					t.Errorf("asked %s", r.URL.Path)
				}
				tc.h(w, r)
			}))
			defer srv.Close()
			h, err := OpenHTTP(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			b, err := h.WebSeed(t.Context(), "img", "1", off, n)
			switch {
			case tc.want == nil:
				if err != nil || !bytes.Equal(b, file[off:off+n]) {
					t.Fatalf("%d bytes, %v; want the range", len(b), err)
				}
			case b != nil || err == nil:
				t.Fatalf("%d bytes, %v; want an error", len(b), err)
			case tc.want == errAny:
				if errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoRange) || errors.Is(err, ErrRangeIgnored) {
					t.Fatalf("%v: a failure, not an answer", err)
				}
			case !errors.Is(err, tc.want) || !strings.Contains(err.Error(), "swarm/data/img/1"):
				t.Fatalf("%v; want %v, naming the URL", err, tc.want)
			}
		})
	}
}

var errAny = errors.New("any error")

func status(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { http.Error(w, http.StatusText(code), code) }
}
