package netboot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
)

// ErrStatus says a server's status could not be had or read.
var ErrStatus = errors.New("no fleet status")

// fleetRoutes are the first path elements of the requests that machines
// make; only those are recorded, so a browser or a scanner poking at the
// server does not show up as a node.
var fleetRoutes = map[string]bool{"boot.ipxe": true, "index.json": true, "images": true, "chunks": true, "swarm": true, "boot": true}

// countingWriter counts the body bytes sent and keeps the status. It
// passes ReadFrom through so store files still go out by sendfile.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(c.ResponseWriter, r)
	}
	c.n += n
	return n, err
}

// record serves r through next, noting it in h.Fleet when it is a
// machine's request.
func (h *HTTP) record(w http.ResponseWriter, r *http.Request, next func(http.ResponseWriter, *http.Request)) {
	first, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if h.Fleet == nil || !fleetRoutes[first] {
		next(w, r)
		return
	}
	cw := &countingWriter{ResponseWriter: w}
	next(cw, r)
	if cw.status == 0 {
		cw.status = http.StatusOK
	}
	h.Fleet.Record(r, cw.status, cw.n)
}

func (h *HTTP) statusJSON(w http.ResponseWriter, r *http.Request) {
	b, err := json.MarshalIndent(h.Fleet.Status(), "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(append(b, '\n')))
}

// statusGroup is one image version's clients on the page.
type statusGroup struct {
	Image   string
	Clients []*FleetClient
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"bytes": humanBytes,
	"short": func(s string) string { return truncate(s, 40) },
	"ago":   func(now, t time.Time) string { return now.Sub(t).Round(time.Second).String() },
	"pct": func(s *SwarmSeen) string {
		if s == nil || s.Left+s.Downloaded == 0 {
			return ""
		}
		return fmt.Sprintf("%.0f%%", 100*float64(s.Downloaded)/float64(s.Downloaded+s.Left))
	},
}).Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>imprint fleet</title>
<style>
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em;min-width:60%}
th,td{border-bottom:1px solid #ddd;padding:.3em .7em;text-align:left;font-size:14px;white-space:nowrap}
th{background:#f2f2f2} td.n{text-align:right;font-variant-numeric:tabular-nums}
.active{color:#06c}.done{color:#080;font-weight:bold}.failed{color:#c00;font-weight:bold}.idle{color:#888}
small{color:#666}
</style></head><body>
<h1>imprint fleet</h1>
<p><small>{{len .Status.Clients}} client(s) as of {{.Status.Time.Format "2006-01-02 15:04:05 MST"}}; this page refreshes every 2 s; the same as JSON at <a href="status.json">status.json</a>.</small></p>
{{if not .Groups}}<p>No machine has fetched anything yet.</p>{{end}}
{{range .Groups}}<h2>{{if .Image}}{{.Image}}{{else}}(image not known yet){{end}}</h2>
<table><tr><th>address</th><th>MAC</th><th>node</th><th>state</th><th>bytes sent</th><th>chunks</th><th>swarm</th><th>last seen</th><th>last request / error</th></tr>
{{range .Clients}}<tr><td class="addr">{{.Addr}}</td><td class="mac">{{.MAC}}</td><td class="node">{{.Node}}</td><td class="{{.State}}">{{.State}}</td><td class="n">{{bytes .BytesSent}}</td><td class="n">{{.Chunks}}</td>
<td>{{with .Swarm}}{{pct .}} ↓{{bytes .Downloaded}} ↑{{bytes .Uploaded}}{{end}}</td><td>{{ago $.Status.Time .LastSeen}} ago</td>
<td>{{if .LastError}}<span class="failed">{{.LastError}}</span>{{else}}{{short .LastPath}}{{end}}</td></tr>
{{end}}</table>
{{end}}</body></html>
`))

func (h *HTTP) statusHTML(w http.ResponseWriter, r *http.Request) {
	st := h.Fleet.Status()
	var groups []*statusGroup
	for _, c := range st.Clients {
		key := c.Image
		if c.Version != "" {
			key += ":" + c.Version
		}
		if len(groups) == 0 || groups[len(groups)-1].Image != key {
			groups = append(groups, &statusGroup{Image: key})
		}
		g := groups[len(groups)-1]
		g.Clients = append(g.Clients, c)
	}
	var b bytes.Buffer
	if err := statusPage.Execute(&b, struct {
		Status Status
		Groups []*statusGroup
	}{st, groups}); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b.Bytes()))
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// maxStatusBody bounds what FetchStatus reads: 1024 clients take well
// under 1 MiB.
const maxStatusBody = 8 << 20

// FetchStatus reads server's /status.json (server is the base URL of an
// `imprint serve`, e.g. http://10.0.0.1:8080/).
func FetchStatus(ctx context.Context, client *http.Client, server string) (Status, error) {
	var st Status
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return st, fmt.Errorf("%w: server %q: want an http:// or https:// URL", ErrStatus, server)
	}
	u = u.JoinPath("status.json")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return st, fmt.Errorf("%w: %w", ErrStatus, err)
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return st, fmt.Errorf("%w: %w", ErrStatus, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%w: %s answered %s (is it an imprint serve?)", ErrStatus, u, resp.Status)
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, maxStatusBody))
	if err := dec.Decode(&st); err != nil {
		return st, fmt.Errorf("%w: %s: %w", ErrStatus, u, err)
	}
	return st, nil
}

// WriteStatus prints st as a table, one line per client, grouped by image.
func WriteStatus(w io.Writer, st Status) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tADDRESS\tMAC\tNODE\tSTATE\tSENT\tCHUNKS\tSWARM\tLAST SEEN\tLAST")
	for _, c := range st.Clients {
		img := c.Image
		if c.Version != "" {
			img += ":" + c.Version
		}
		if img == "" {
			img = "-"
		}
		mac := c.MAC
		if mac == "" {
			mac = "-"
		}
		node := c.Node
		if node == "" {
			node = "-"
		}
		sw := "-"
		if c.Swarm != nil {
			sw = fmt.Sprintf("left %s up %s", humanBytes(c.Swarm.Left), humanBytes(c.Swarm.Uploaded))
		}
		last := c.LastPath
		if c.LastError != "" {
			last = c.LastError
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s ago\t%s\n", img, c.Addr, mac, node, c.State, humanBytes(c.BytesSent), c.Chunks, sw,
			st.Time.Sub(c.LastSeen).Round(time.Second), last)
	}
	if len(st.Clients) == 0 {
		fmt.Fprintln(tw, "(no clients)")
	}
	return tw.Flush()
}
