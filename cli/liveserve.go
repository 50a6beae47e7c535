package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/imprint-dev/imprint/deploy"
	"github.com/imprint-dev/imprint/netboot"
	"github.com/imprint-dev/imprint/store"
)

// liveServer is deploy --serve: the disk being deployed, served over HTTP.
type liveServer struct {
	e    *env
	sw   *store.Switch
	srv  *http.Server
	addr string
}

func startLiveServer(e *env, addr string, o *deploy.Options) (*liveServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--serve: %w", err)
	}
	l := &liveServer{e: e, sw: &store.Switch{}, addr: ln.Addr().String()}
	h := &netboot.HTTP{Disk: l.sw, Decider: netboot.Static{}, Logf: func(f string, a ...any) { fmt.Fprintf(e.io.Err, f+"\n", a...) }}
	l.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go l.srv.Serve(ln)
	fmt.Fprintf(e.io.Err, "serving the disk at http://%s/ while it is written\n", l.addr)
	o.Live = func(d *deploy.DiskSource) { l.sw.Set(d) }
	return l, nil
}

// serveUntilDone switches to the completed disk and serves until ctx ends.
func (l *liveServer) serveUntilDone(ctx context.Context, disk string) {
	full, err := deploy.OpenDiskSource(disk)
	if err != nil {
		fmt.Fprintf(l.e.io.Err, "imprint: cannot serve the deployed disk: %v\n", err)
		return
	}
	defer full.Close()
	l.sw.Set(full)
	fmt.Fprintf(l.e.io.Err, "deployed; still serving it at http://%s/ until interrupted\n", l.addr)
	<-ctx.Done()
}

func (l *liveServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		fmt.Fprintf(l.e.io.Err, "imprint: stopping the server: %v\n", err)
	}
}
