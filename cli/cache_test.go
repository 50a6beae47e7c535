package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/internal/testenv"
)

// freePort is a loopback port nothing listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

func waitHTTP(t *testing.T, url string, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return
		}
	}
	t.Fatalf("%s never answered at %s", what, url)
}

// nginxCacheConf is dist/nginx-imprint-cache.conf pointed at upstream and
// listening on listen, with its cache under dir: the shipped file itself,
// so a change to it is what this test runs.
func nginxCacheConf(t *testing.T, upstream, listen, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "dist", "nginx-imprint-cache.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for _, r := range [][2]string{
		{"server 10.0.0.1:8080;", "server " + upstream + ";"},
		{"listen 8080;", "listen " + listen + ";"},
		{"/var/cache/nginx/imprint", filepath.Join(dir, "cache")},
	} {
		if !strings.Contains(conf, r[0]) {
			t.Fatalf("dist/nginx-imprint-cache.conf no longer has %q", r[0])
		}
		conf = strings.Replace(conf, r[0], r[1], 1)
	}
	return conf
}

// TestDeployThroughNginxCache puts nginx with the shipped cache config in
// front of imprint serve, deploys through it, stops imprint serve, and
// deploys again: the second disk comes out identical from the cache alone,
// every chunk a cache HIT.
func TestDeployThroughNginxCache(t *testing.T) {
	nginx := testenv.Tool(t, "nginx")
	b := smallImage(t)
	dir := t.TempDir()

	origin, front := "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan int, 1)
	var serveErr bytes.Buffer
	go func() {
		served <- Run(ctx, []string{"serve", "--store", b.store, "--image", b.name, "--http", origin, "--public-url", "http://" + front + "/", "--no-swarm"},
			Stdio{In: strings.NewReader(""), Out: &bytes.Buffer{}, Err: &serveErr})
	}()
	stopServe := func() {
		if stop != nil {
			stop()
			stop = nil
			<-served
		}
	}
	t.Cleanup(stopServe)
	waitHTTP(t, "http://"+origin+"/index.json", "imprint serve")

	access := filepath.Join(dir, "access.log")
	conf := filepath.Join(dir, "nginx.conf")
	main := fmt.Sprintf(`daemon off;
user root;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 256; }
http {
    log_format cache "$upstream_cache_status $status $uri";
    access_log %[2]s cache;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
%[3]s
}
`, dir, access, nginxCacheConf(t, origin, front, dir))
	if err := os.WriteFile(conf, []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginx, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf)
	var nginxOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &nginxOut, &nginxOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd.WaitDelay = 5 * time.Second
	t.Cleanup(func() {
		// SIGTERM, not SIGKILL: the master then ends its workers, which
		// would otherwise outlive it holding the cache and our pipe.
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			e, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx: %s\n%s", nginxOut.String(), e)
		}
	})
	waitHTTP(t, "http://"+front+"/index.json", "nginx")

	want := b.m.Partitions[0].Content
	deploy := func(name string) []string {
		t.Helper()
		disk := filepath.Join(dir, name)
		before, _ := os.ReadFile(access)
		mustRun(t, "deploy", "--from", "http://"+front+"/", "--image", b.name, "--disk", disk, "--size", "100M", "--yes")
		root, _ := onDisk(t, disk).State.Table.Find("root")
		if got := sha256Range(t, disk, root.Start, want.Size); got != want.SHA256 {
			t.Fatalf("%s: root is %s, want %s", name, got, want.SHA256)
		}
		after, _ := os.ReadFile(access)
		var chunks []string // "STATUS /chunks/..."
		for _, l := range strings.Split(string(after[len(before):]), "\n") {
			if f := strings.Fields(l); len(f) == 3 && strings.HasPrefix(f[2], "/chunks/") {
				chunks = append(chunks, f[0]+" "+f[2])
			}
		}
		if len(chunks) < len(want.Chunks) {
			t.Fatalf("%s: %d chunk requests through nginx, the image has %d:\n%s", name, len(chunks), len(want.Chunks), after[len(before):])
		}
		return chunks
	}
	first := deploy("first.img")
	misses := 0
	for _, c := range first {
		if strings.HasPrefix(c, "MISS ") {
			misses++
		}
	}
	if misses == 0 {
		t.Fatalf("the first deploy fetched nothing from imprint serve:\n%s", strings.Join(first, "\n"))
	}

	// Nothing upstream any more: what the second deploy gets is the cache's.
	stopServe()
	if resp, err := http.Get("http://" + origin + "/index.json"); err == nil {
		resp.Body.Close()
		t.Fatal("imprint serve still answers")
	}
	for _, c := range deploy("second.img") {
		if !strings.HasPrefix(c, "HIT ") {
			t.Errorf("second deploy: %s, want every chunk a HIT", c)
		}
	}
	if t.Failed() {
		t.Logf("imprint serve: %s", serveErr.String())
	}
}
