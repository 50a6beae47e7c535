package netboot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/netboot/dhcp"
	"github.com/imprint-dev/imprint/netboot/tftp"
	"golang.org/x/sync/errgroup"
)

// DefaultIPXEDir is where Debian's ipxe package puts its binaries: the
// fallback for an image that carries no iPXE.
const DefaultIPXEDir = "/usr/lib/ipxe"

// Server is `imprint serve`: HTTP always, DHCP (full or proxy) and TFTP
// when configured. All listeners are opened before anything is served.
type Server struct {
	HTTP     *HTTP
	HTTPAddr string
	// HTTPListener, when set, is served instead of listening on HTTPAddr:
	// a caller that must know the port before serving (an ephemeral one,
	// for `imprint vm --netboot`) opens it. Run closes it.
	HTTPListener net.Listener
	DHCP         *dhcp.Config // nil: no DHCP
	TFTPAddr     string       // "": no TFTP
	// LoaderImage (NAME or NAME:VERSION) is the image whose iPXE binaries
	// PXE clients get: a TFTP request names no machine. "" is the
	// Decider's default image when it is a Static.
	LoaderImage string
	// IPXEDir holds iPXE binaries for images that carry none.
	IPXEDir string
	Logf    func(string, ...any)
	// HTTPLimits and TFTPLimits bound what clients can make the server
	// hold (docs/limits.md); zero values take the defaults.
	HTTPLimits HTTPLimits
	TFTPLimits tftp.Limits
}

func (s *Server) logf(format string, a ...any) {
	if s.Logf != nil {
		s.Logf(format, a...)
	}
}

// Booter is the DHCP side of the per-machine decision: PXE ROMs get iPXE
// by TFTP, UEFI HTTP boot gets iPXE by HTTP, iPXE gets its script URL.
func (s *Server) Booter(c dhcp.Client) (dhcp.Boot, bool) {
	if _, ok := s.HTTP.Decider.Decide(c.MAC); !ok {
		return dhcp.Boot{}, false
	}
	base := strings.TrimRight(s.HTTP.Public, "/")
	switch {
	case c.IPXE:
		return dhcp.Boot{Filename: base + "/boot.ipxe?mac=" + c.MAC.String()}, true
	case c.HTTPClient:
		return dhcp.Boot{Filename: base + "/ipxe/ipxe.efi"}, true
	case c.PXE && c.Arch == dhcp.ArchBIOS:
		return dhcp.Boot{Filename: "undionly.kpxe"}, true
	case c.PXE && c.Arch.UEFIx64():
		return dhcp.Boot{Filename: "ipxe.efi"}, true
	}
	return dhcp.Boot{}, false
}

// ipxeFiles are the iPXE binaries served by TFTP and HTTP, by file name:
// the image's loader of that name.
var ipxeFiles = map[string]bool{image.LoaderIPXEEFI: true, image.LoaderIPXEBIOS: true}

func (s *Server) ipxeDir() string {
	if s.IPXEDir != "" {
		return s.IPXEDir
	}
	return DefaultIPXEDir
}

func (s *Server) loaderImage() string {
	if s.LoaderImage != "" {
		return s.LoaderImage
	}
	if st, ok := s.HTTP.Decider.(Static); ok {
		return st.Default.Image
	}
	return ""
}

// ipxe gives iPXE binary name (an ipxeFiles key) for a PXE client: the
// served image's loader, assembled from its chunks and checked against its
// manifest. Only when the image carries none is the host's file sent, and
// that is logged.
func (s *Server) ipxe(ctx context.Context, name string) (io.ReadSeeker, error) {
	img := s.loaderImage()
	if img != "" {
		rd, err := s.HTTP.Loader(ctx, img, name)
		if err == nil {
			return rd, nil
		}
		if !errors.Is(err, ErrNoLoader) {
			return nil, err
		}
	}
	p := filepath.Join(s.ipxeDir(), name)
	s.logf("image %q carries no %s: sending this host's %s", img, name, p)
	return os.Open(p)
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	var err error
	ln := s.HTTPListener
	if ln == nil {
		if ln, err = net.Listen("tcp", s.HTTPAddr); err != nil {
			return fmt.Errorf("HTTP: %w", err)
		}
	}
	var tconn net.PacketConn
	if s.TFTPAddr != "" {
		if tconn, err = net.ListenPacket("udp4", s.TFTPAddr); err != nil {
			ln.Close()
			return fmt.Errorf("TFTP: %w", err)
		}
	}
	var dsrv *dhcp.Server
	if s.DHCP != nil {
		cfg := *s.DHCP
		cfg.Booter = s.Booter
		if cfg.Logf == nil {
			cfg.Logf = s.Logf
		}
		if dsrv, err = dhcp.New(cfg); err != nil {
			ln.Close()
			if tconn != nil {
				tconn.Close()
			}
			return fmt.Errorf("DHCP: %w", err)
		}
		if s.HTTP != nil && s.HTTP.Fleet != nil && s.HTTP.Fleet.Leases == nil {
			// The status page names machines by their leases.
			s.HTTP.Fleet.Leases = dsrv.Lookup
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ipxe/", func(w http.ResponseWriter, r *http.Request) {
		if !getOrHead(w, r) {
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/ipxe/")
		if !ipxeFiles[name] {
			http.NotFound(w, r)
			return
		}
		f, err := s.ipxe(r.Context(), name)
		if err != nil {
			s.logf("http: %s: %v", name, err)
			http.NotFound(w, r)
			return
		}
		if c, ok := f.(io.Closer); ok {
			defer c.Close()
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", time.Time{}, f)
	})
	mux.Handle("/", s.HTTP)
	hs := NewHTTPServer(logRequests(mux, s.logf), s.HTTPLimits)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := hs.Serve(LimitListener(ln, s.HTTPLimits))
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return hs.Shutdown(sctx)
	})
	if tconn != nil {
		ts := &tftp.Server{Handler: tftp.HandlerFunc(s.tftpOpen), Logf: s.Logf, Limits: s.TFTPLimits}
		g.Go(func() error { return ts.Serve(gctx, tconn) })
	}
	if dsrv != nil {
		g.Go(func() error { return dsrv.Serve(gctx) })
	}
	s.logf("imprint serve: HTTP on %s (public %s)%s%s", ln.Addr(), s.HTTP.Public,
		map[bool]string{true: ", TFTP on " + s.TFTPAddr}[tconn != nil],
		map[bool]string{true: ", DHCP " + modeName(s.DHCP)}[dsrv != nil])
	return g.Wait()
}

func modeName(c *dhcp.Config) string {
	if c == nil {
		return "off"
	}
	return c.Mode.String() + " on " + c.Interface
}

// tftpOpen serves the iPXE binaries, and nothing else: PXE ROMs only need
// iPXE; everything after it goes over HTTP.
func (s *Server) tftpOpen(ctx context.Context, name string, remote net.Addr) (io.ReadSeeker, error) {
	clean, err := tftp.CleanPath(name)
	if err != nil {
		return nil, err
	}
	if !ipxeFiles[clean] {
		s.logf("tftp: %s asked for %q: not served", remote, name)
		return nil, fmt.Errorf("%s: %w", name, os.ErrNotExist)
	}
	s.logf("tftp: %s <- %s", remote, clean)
	return s.ipxe(ctx, clean)
}

// logRequests logs requests other than chunk downloads (and every failed
// one), for the admin watching a rack boot.
func logRequests(h http.Handler, logf func(string, ...any)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		// Chunks and the status page (polled every few seconds) would
		// drown the rest.
		quiet := strings.HasPrefix(r.URL.Path, "/chunks/") || r.URL.Path == "/" || r.URL.Path == "/status.json"
		if rec.status >= 400 || !quiet {
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
