package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
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
// `imprint serve --disk`. It makes requests and says how they went
// (ErrNotFound, ErrNotYet, image.ErrChecksum, ErrNoProgress, or another
// error for a failure); whether to wait, retry or ask elsewhere is package
// fetch's decision.
type HTTP struct {
	Base   *url.URL
	Client *http.Client
	// Stall fails a response whose body gives no byte for this long
	// (ErrNoProgress); 0: none, the Client's own timeouts only.
	Stall time.Duration
}

// HTTPOptions tune an HTTP source; zero values take the defaults in
// brackets. There is no timeout for a whole request: a server whose link
// is shared by many clients sends a chunk slowly, and slow is not dead.
// Dead is no answer to a connection, no response headers, or a body that
// stops moving.
type HTTPOptions struct {
	Connect time.Duration // to connect (TCP and TLS) [15s]
	Header  time.Duration // from the request sent to the response headers [60s]
	// Stall is how long a response body may give no byte [60s]: the
	// server's own per-write deadline (netboot.DefaultWriteTimeout) is
	// as long.
	Stall time.Duration
	// MaxConns caps concurrent requests to this source [8]: a deploy's
	// workers (16 at 1 MiB chunks) times many nodes would otherwise split
	// a slow server's link into hundreds of TCP flows, each so thin that
	// packet loss stops it for a minute at a time. More requests wait for
	// a free connection, which a saturated link costs nothing.
	MaxConns int
}

// OpenHTTP makes an HTTP source for the store at base, with the default
// HTTPOptions.
func OpenHTTP(base string) (*HTTP, error) { return OpenHTTPWith(base, HTTPOptions{}) }

// OpenHTTPWith makes an HTTP source for the store at base.
func OpenHTTPWith(base string, o HTTPOptions) (*HTTP, error) {
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
	def := func(d, v time.Duration) time.Duration {
		if d > 0 {
			return d
		}
		return v
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	dialer := &net.Dialer{Timeout: def(o.Connect, 15*time.Second), KeepAlive: 30 * time.Second}
	tr.DialContext = dialer.DialContext
	tr.TLSHandshakeTimeout = def(o.Connect, 15*time.Second)
	tr.ResponseHeaderTimeout = def(o.Header, 60*time.Second)
	tr.MaxConnsPerHost = 8
	if o.MaxConns > 0 {
		tr.MaxConnsPerHost = o.MaxConns
	}
	// The default transport keeps 2 idle connections per host: a deploy's
	// workers would close and dial again on almost every request.
	tr.MaxIdleConnsPerHost = tr.MaxConnsPerHost
	return &HTTP{Base: u, Client: &http.Client{Transport: tr}, Stall: def(o.Stall, 60*time.Second)}, nil
}

// String names the source in messages.
func (h *HTTP) String() string { return h.Base.String() }

func (h *HTTP) get(ctx context.Context, rel string, limit int64) ([]byte, error) {
	u := h.Base.ResolveReference(&url.URL{Path: rel}).String()
	return againOnHiccup(ctx, func() ([]byte, error) { return h.once(ctx, u, limit) })
}

// againOnHiccup runs req, and once more when it failed as a kept-alive
// connection the server closed or reset as the request went out does:
// the transport's hiccup, not the server's answer; one more request on a
// fresh connection says how the server is.
func againOnHiccup(ctx context.Context, req func() ([]byte, error)) ([]byte, error) {
	b, err := req()
	if err != nil && ctx.Err() == nil && !errors.Is(err, ErrNoProgress) && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)) {
		b, err = req()
	}
	return b, err
}

func (h *HTTP) once(ctx context.Context, u string, limit int64) ([]byte, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	b, err := h.do(ctx, cancel, u, limit)
	if err != nil && errors.Is(context.Cause(ctx), ErrNoProgress) {
		return nil, fmt.Errorf("GET %s: %w: no byte for %s", u, ErrNoProgress, h.Stall)
	}
	return b, err
}

func (h *HTTP) do(ctx context.Context, cancel context.CancelCauseFunc, u string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("GET %s: %w", u, ErrNotFound)
	case resp.StatusCode == http.StatusTooEarly:
		return nil, fmt.Errorf("GET %s: %w", u, ErrNotYet)
	case resp.StatusCode == http.StatusConflict:
		// imprint serve --disk refuses a chunk that drifted on its disk.
		return nil, fmt.Errorf("GET %s: %w: the server refused it as drifted", u, image.ErrChecksum)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("GET %s: %d bytes, more than %d", u, resp.ContentLength, limit)
	}
	var body io.Reader = resp.Body
	if h.Stall > 0 {
		// A progress timeout, not a deadline: every byte moves it on, so
		// a body that trickles in never fails and one that stops does.
		t := time.AfterFunc(h.Stall, func() { cancel(ErrNoProgress) })
		defer t.Stop()
		body = &stallReader{r: resp.Body, t: t, d: h.Stall}
	}
	if resp.ContentLength >= 0 {
		// One allocation of the announced size: io.ReadAll's growing
		// buffer copies a 4 MiB chunk about a dozen times.
		b := make([]byte, resp.ContentLength)
		if _, err := io.ReadFull(body, b); err != nil {
			return nil, fmt.Errorf("GET %s: %w", u, err)
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("GET %s: more than %d bytes", u, limit)
	}
	return b, nil
}

// stallReader moves its timer on with every read that gives bytes.
type stallReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.t.Reset(s.d)
	}
	return n, err
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

// WebSeed reads n bytes at off of the swarm torrent file of name:version
// from `imprint serve`'s web seed (swarm/data/NAME/VERSION below the
// source's URL) with one Range request. The bytes are as sent: the caller
// checks them against the image's piece hashes. A server without the web
// seed answers ErrNotFound (404, 410); one that refuses the request for
// good (noWebSeed) is ErrNoRange; one that answers with anything but
// exactly the range asked for (a 200 with the whole file, another range,
// a short or a long body) is an error, ErrRangeIgnored when it ignored the
// Range (a caching proxy may, on its own first miss).
func (h *HTTP) WebSeed(ctx context.Context, name, version string, off, n int64) ([]byte, error) {
	if image.ValidName(name) != nil || image.ValidName(version) != nil {
		return nil, fmt.Errorf("web seed of image %s:%s: %w", name, version, ErrNotFound)
	}
	if off < 0 || n <= 0 || n > maxChunkBytes {
		return nil, fmt.Errorf("web seed of image %s:%s: a range of %d bytes at %d", name, version, n, off)
	}
	u := h.Base.ResolveReference(&url.URL{Path: "swarm/data/" + name + "/" + version}).String()
	return againOnHiccup(ctx, func() ([]byte, error) { return h.rangeOnce(ctx, u, off, n) })
}

func (h *HTTP) rangeOnce(ctx context.Context, u string, off, n int64) ([]byte, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	want := fmt.Sprintf("bytes %d-%d/", off, off+n-1)
	what := fmt.Sprintf("GET %s (%s)", u, strings.TrimSuffix(want, "/"))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	resp, err := h.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	case noWebSeed(resp.StatusCode):
		return nil, fmt.Errorf("%s: %w: %s", what, ErrNoRange, resp.Status)
	case resp.StatusCode == http.StatusOK:
		return nil, fmt.Errorf("%s: %w: the server sent the whole file (200)", what, ErrRangeIgnored)
	case resp.StatusCode != http.StatusPartialContent:
		return nil, fmt.Errorf("%s: %s", what, resp.Status)
	}
	if cr := resp.Header.Get("Content-Range"); !strings.HasPrefix(cr, want) {
		return nil, fmt.Errorf("%s: %w: the server sent Content-Range %q", what, ErrRangeIgnored, cr)
	}
	if resp.ContentLength >= 0 && resp.ContentLength != n {
		return nil, fmt.Errorf("%s: %w: the server announced %d bytes", what, ErrRangeIgnored, resp.ContentLength)
	}
	var body io.Reader = resp.Body
	if h.Stall > 0 {
		t := time.AfterFunc(h.Stall, func() { cancel(ErrNoProgress) })
		defer t.Stop()
		body = &stallReader{r: resp.Body, t: t, d: h.Stall}
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(body, b); err != nil {
		if errors.Is(context.Cause(ctx), ErrNoProgress) {
			return nil, fmt.Errorf("%s: %w: no byte for %s", what, ErrNoProgress, h.Stall)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	// A body longer than the range is a server that does not do what it
	// says: nothing of it is used.
	if k, _ := body.Read(make([]byte, 1)); k > 0 {
		return nil, fmt.Errorf("%s: %w: the body is longer than %d bytes", what, ErrRangeIgnored, n)
	}
	return b, nil
}

// noWebSeed says a status answers a range request of the web seed for
// good, not for now: a request the server does not take (400, 405, 416,
// 501) or one it does not allow (401, 403: a bucket's missing key). Asking
// again would get the same.
func noWebSeed(status int) bool {
	switch status {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusMethodNotAllowed,
		http.StatusRequestedRangeNotSatisfiable, http.StatusNotImplemented:
		return true
	}
	return false
}
