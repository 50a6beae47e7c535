package store

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestHTTPWaitsForAPeerThatIsNotThereYet: 425 (a peer still deploying) is
// waited out; past NotYetWait the error is ErrNotYet so the copy moves on.
func TestHTTPWaitsForAPeerThatIsNotThereYet(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/never/index.json" || calls.Add(1) <= 3 {
			w.WriteHeader(http.StatusTooEarly)
			return
		}
		w.Write([]byte(`{"images":{}}`))
	}))
	defer srv.Close()

	h, err := OpenHTTP(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Index(t.Context()); err != nil {
		t.Fatalf("after three 425s: %v", err)
	}
	if calls.Load() != 4 {
		t.Errorf("%d requests, want 4", calls.Load())
	}

	never, _ := OpenHTTP(srv.URL + "/never/")
	never.NotYetWait = 300 * time.Millisecond
	begin := time.Now()
	_, err = never.Index(t.Context())
	if !errors.Is(err, ErrNotYet) {
		t.Fatalf("a peer that never has it: %v", err)
	}
	if el := time.Since(begin); el > 3*time.Second {
		t.Errorf("gave up after %v; NotYetWait is 300ms", el)
	}
}
