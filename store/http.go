package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/imprint-dev/imprint/image"
)

// Size limits for what a store server may send: a server that sends more
// is broken or hostile, and the client must not be made to buffer it.
const (
	maxManifestBytes = 64 << 20
	maxChunkBytes    = 80 << 20 // a 64 MiB chunk that zstd could not shrink, plus framing
)

// HTTP is a store served over HTTP(S): any static file server holding a
// store directory, `imprint serve`, or a deployed disk served with
// `imprint serve --disk`.
type HTTP struct {
	Base   *url.URL
	Client *http.Client
	// Tries is how often a request is made before its error is returned;
	// transient failures (connection errors, 5xx) are retried.
	Tries int
	// NotYetWait is how long a chunk the server does not have yet (425,
	// a peer still deploying) is waited for before the error wraps
	// ErrNotYet and the copy asks the next source.
	NotYetWait time.Duration

	// A server that could not be reached twice in a row is not asked
	// again for downFor: a dead peer first in --from must not cost the
	// retries' pauses on every chunk.
	mu        sync.Mutex
	fails     int
	downUntil time.Time
}

// downFor is how long an unreachable server is passed over.
const downFor = 15 * time.Second

// ErrDown says a source is being passed over after it could not be reached.
var ErrDown = errors.New("unreachable, passed over for now")

func (h *HTTP) down() (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.downUntil, time.Now().Before(h.downUntil)
}

// note records whether a request reached the server.
func (h *HTTP) note(reached bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if reached {
		h.fails = 0
		return
	}
	h.fails++
	if h.fails >= 2 {
		h.downUntil = time.Now().Add(downFor)
	}
}

// OpenHTTP makes an HTTP source for the store at base.
func OpenHTTP(base string) (*HTTP, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("store URL %q: %w", base, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("store URL %q: want http:// or https://", base)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	return &HTTP{Base: u, Client: &http.Client{Timeout: 2 * time.Minute}, Tries: 3, NotYetWait: 2 * time.Minute}, nil
}

// String names the source in messages.
func (h *HTTP) String() string { return h.Base.String() }

func (h *HTTP) get(ctx context.Context, rel string, limit int64) ([]byte, error) {
	u := h.Base.ResolveReference(&url.URL{Path: rel})
	if until, down := h.down(); down {
		return nil, fmt.Errorf("GET %s: %w (until %s)", u, ErrDown, until.Format("15:04:05"))
	}
	tries := max(h.Tries, 1)
	var last error
	waitUntil := time.Now().Add(h.NotYetWait)
	pause := 50 * time.Millisecond
	for i := 0; i < tries; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(i) * 300 * time.Millisecond):
			}
		}
		b, retry, err := h.once(ctx, u.String(), limit)
		// A peer still deploying has the chunk soon: wait for it without
		// spending a try, up to NotYetWait in all.
		for errors.Is(err, ErrNotYet) && time.Now().Add(pause).Before(waitUntil) {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(pause):
			}
			pause = min(2*pause, 200*time.Millisecond)
			b, retry, err = h.once(ctx, u.String(), limit)
		}
		if err == nil || !retry {
			h.note(true)
			return b, err
		}
		last = err
	}
	h.note(false)
	return nil, last
}

func (h *HTTP) once(ctx context.Context, u string, limit int64) ([]byte, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, err
	}
	resp, err := h.Client.Do(req)
	if err != nil {
		return nil, ctx.Err() == nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, false, fmt.Errorf("GET %s: %w", u, ErrNotFound)
	case resp.StatusCode == http.StatusTooEarly:
		return nil, false, fmt.Errorf("GET %s: %w", u, ErrNotYet)
	case resp.StatusCode == http.StatusConflict:
		// imprint serve --disk refuses a chunk that drifted on its disk.
		return nil, false, fmt.Errorf("GET %s: %w: the server refused it as drifted", u, image.ErrChecksum)
	case resp.StatusCode >= 500:
		return nil, true, fmt.Errorf("GET %s: %s", u, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return nil, false, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if resp.ContentLength > limit {
		return nil, false, fmt.Errorf("GET %s: %d bytes, more than %d", u, resp.ContentLength, limit)
	}
	if resp.ContentLength >= 0 {
		// One allocation of the announced size: io.ReadAll's growing
		// buffer copies a 4 MiB chunk about a dozen times.
		b := make([]byte, resp.ContentLength)
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			return nil, true, fmt.Errorf("GET %s: %w", u, err)
		}
		return b, false, nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, true, fmt.Errorf("GET %s: %w", u, err)
	}
	if int64(len(b)) > limit {
		return nil, false, fmt.Errorf("GET %s: more than %d bytes", u, limit)
	}
	return b, false, nil
}

// Index implements Source.
func (h *HTTP) Index(ctx context.Context) (*Index, error) {
	b, err := h.get(ctx, "index.json", maxManifestBytes)
	if err != nil {
		return nil, err
	}
	var idx Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%sindex.json: %w", h.Base, err)
	}
	return &idx, nil
}

// Manifest implements Source.
func (h *HTTP) Manifest(ctx context.Context, name, version string) ([]byte, error) {
	if image.ValidName(name) != nil || image.ValidName(version) != nil {
		return nil, fmt.Errorf("image %s:%s: %w", name, version, ErrNotFound)
	}
	b, err := h.get(ctx, "images/"+name+"/"+version+"/manifest.json", maxManifestBytes)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("image %q version %q: %w at %s", name, version, ErrNotFound, h.Base)
	}
	return b, err
}

// Chunk implements Source.
func (h *HTTP) Chunk(ctx context.Context, sum string) ([]byte, error) {
	if !image.IsHash(sum) {
		return nil, fmt.Errorf("chunk %q: %w", sum, ErrNotFound)
	}
	return h.get(ctx, "chunks/"+sum[:2]+"/"+sum, maxChunkBytes)
}

// OpenSource opens a store given as a directory or an http(s) URL.
func OpenSource(s string) (Source, error) {
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		return OpenHTTP(s)
	}
	return OpenDir(s)
}
