package netboot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/imprint-dev/imprint/deploy"
	"github.com/imprint-dev/imprint/ondisk"
	"github.com/imprint-dev/imprint/store"
)

// Live serves a disk over HTTP while a deploy writes it (cut-through:
// chunks as they land, the rest answered "too early" so clients come back
// or take them elsewhere) and, once it is complete, the finished disk. It
// is `imprint deploy --serve`.
type Live struct {
	sw   store.Switch
	srv  *http.Server
	addr string
	logf func(string, ...any)
}

// StartLive listens on addr and hooks itself into o, so the deploy o
// describes hands it the disk as soon as the disk is partitioned. Until
// then every request is answered "too early". logf may be nil.
func StartLive(addr string, o *deploy.Options, logf func(string, ...any)) (*Live, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	l := &Live{addr: ln.Addr().String(), logf: logf}
	h := &HTTP{Disk: &l.sw, Decider: Static{}, Logf: logf}
	l.srv = NewHTTPServer(h, HTTPLimits{})
	go l.srv.Serve(LimitListener(ln, HTTPLimits{}))
	o.Live = func(d *ondisk.DiskSource) { l.sw.Set(d) }
	logf("serving the disk at %s while it is written", l.URL())
	return l, nil
}

// URL is where the disk is served.
func (l *Live) URL() string { return "http://" + l.addr + "/" }

// ServeDeployed switches to the completed disk at path, whose record the
// deploy has just written, and serves it until ctx ends.
func (l *Live) ServeDeployed(ctx context.Context, path string) error {
	full, err := ondisk.OpenDiskSource(path)
	if err != nil {
		return fmt.Errorf("serve the deployed disk: %w", err)
	}
	defer full.Close()
	l.sw.Set(full)
	l.logf("deployed; still serving it at %s until interrupted", l.URL())
	<-ctx.Done()
	return nil
}

// Stop ends serving, giving requests in flight a few seconds.
func (l *Live) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("stop serving the disk: %w", err)
	}
	return nil
}
