package store

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/imprint-dev/imprint/image"
)

// TestHTTPStatusSaysHowItWent: a status becomes the sentinel fetch acts
// on, and every answer is one request: waiting and retrying are fetch's.
func TestHTTPStatusSaysHowItWent(t *testing.T) {
	sum := image.HashBytes([]byte("x"))
	for _, tc := range []struct {
		status int
		want   error // nil: an error that is none of the sentinels
	}{
		{http.StatusNotFound, ErrNotFound},
		{http.StatusTooEarly, ErrNotYet},
		{http.StatusConflict, image.ErrChecksum},
		{http.StatusServiceUnavailable, nil},
		{http.StatusForbidden, nil},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			h, err := OpenHTTP(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			_, err = h.Chunk(t.Context(), sum)
			if err == nil || !strings.Contains(err.Error(), srv.URL) {
				t.Fatalf("error does not name the URL: %v", err)
			}
			for _, s := range []error{ErrNotFound, ErrNotYet, image.ErrChecksum} {
				if errors.Is(err, s) != (s == tc.want) {
					t.Errorf("%d: got %v, want sentinel %v", tc.status, err, tc.want)
				}
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("%d requests for one answer", n)
			}
		})
	}
}

func TestHTTPRefusesOversizedAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "999999999")
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	h, _ := OpenHTTP(srv.URL)
	if _, err := h.Chunk(t.Context(), image.HashBytes([]byte("x"))); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("got %v", err)
	}
}
