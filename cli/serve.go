package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/imprint-dev/imprint/netboot"
	"github.com/spf13/cobra"
)

func newServe(e *env) *cobra.Command {
	var (
		h            netboot.HTTP
		addr, public string
		img, mode    string
		installDisk  string
		extraCmdline string
	)
	c := &cobra.Command{
		Use:   "serve --store DIR [--http ADDR]",
		Short: "Serve a store and boot files over HTTP, with iPXE scripts per machine",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if h.Store == "" {
				return fmt.Errorf("--store is required")
			}
			switch netboot.Mode(mode) {
			case netboot.Diskless, netboot.Install, netboot.Local:
			default:
				return fmt.Errorf("--mode %q: want diskless, install or local", mode)
			}
			if netboot.Mode(mode) == netboot.Install && installDisk == "" {
				return fmt.Errorf("--mode install needs --install-disk (e.g. /dev/vda)")
			}
			h.Decider = netboot.Static{Default: netboot.Decision{Image: img, Mode: netboot.Mode(mode), InstallDisk: installDisk, Cmdline: extraCmdline}}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			if public == "" {
				public = "http://" + ln.Addr().String() + "/"
			}
			h.Public = public
			h.Logf = func(f string, a ...any) { fmt.Fprintf(e.io.Err, f+"\n", a...) }
			srv := &http.Server{Handler: logRequests(&h, h.Logf), ReadHeaderTimeout: 10 * time.Second}
			fmt.Fprintf(e.io.Err, "imprint serve: store %s at %s (listening on %s)\n", h.Store, public, ln.Addr())
			ctx := cmd.Context()
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			select {
			case <-ctx.Done():
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx)
				return nil
			case err := <-errc:
				if errors.Is(err, http.ErrServerClosed) {
					return nil
				}
				return err
			}
		},
	}
	f := c.Flags()
	f.StringVar(&h.Store, "store", "", "store directory to serve")
	f.StringVar(&addr, "http", ":8080", "HTTP listen address")
	f.StringVar(&public, "public-url", "", "URL machines reach this server at (default: from the listen address)")
	f.StringVar(&img, "image", "", "image machines boot, NAME or NAME:VERSION")
	f.StringVar(&mode, "mode", "diskless", "what netbooting machines do: diskless, install or local")
	f.StringVar(&installDisk, "install-disk", "", "disk the agent installs onto with --mode install")
	f.StringVar(&h.Agent, "agent", "", "agent initramfs for images that carry none (imprint initrd)")
	f.StringVar(&h.Console, "console", "console=ttyS0", "kernel console argument for netbooted machines")
	f.StringVar(&extraCmdline, "cmdline", "", "extra kernel arguments for netbooted machines")
	return c
}

// logRequests logs each request with its status, for the admin watching a
// rack boot.
func logRequests(h http.Handler, logf func(string, ...any)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		h.ServeHTTP(rec, r)
		if rec.status >= 400 || !strings.HasPrefix(r.URL.Path, "/chunks/") {
			logf("http: %s %s %s -> %d", r.RemoteAddr, r.Method, r.URL.RequestURI(), rec.status)
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}
