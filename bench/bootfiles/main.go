// Command bootfilesbench is the load of a rack powering on: many clients at
// once fetch the same boot files (kernel, then initrd) from one HTTP
// server. Every body is compared byte for byte with the local file; the
// server's peak resident memory (VmHWM of each pid given, summed) is read
// from /proc after the load. run.sh starts `imprint serve` and nginx and
// runs it against both; see there.
//
//	bootfilesbench -base http://127.0.0.1:18091 -paths boot/b/v1/vmlinuz,boot/b/v1/initrd.img \
//	    -files k,i -clients 500 -pids 1234
//
// Output: one line of key=value pairs (seconds, MB/s, hwm_kib, errors).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	base := flag.String("base", "", "server base URL")
	paths := flag.String("paths", "", "comma-separated URL paths, fetched in order by each client")
	files := flag.String("files", "", "comma-separated local files with the bytes each path must give")
	clients := flag.Int("clients", 500, "clients at once")
	pids := flag.String("pids", "", "comma-separated server pids whose VmHWM is summed")
	flag.Parse()
	if err := run(*base, strings.Split(*paths, ","), strings.Split(*files, ","), *clients, *pids); err != nil {
		fmt.Fprintln(os.Stderr, "bootfilesbench:", err)
		os.Exit(1)
	}
}

func run(base string, paths, files []string, clients int, pids string) error {
	if len(paths) != len(files) || base == "" {
		return fmt.Errorf("give -base and as many -files as -paths")
	}
	want := make([][]byte, len(files))
	var total int64
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		want[i] = b
		total += int64(len(b))
	}
	tr := &http.Transport{
		MaxIdleConnsPerHost: clients, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Minute}
	var errs atomic.Int64
	var firstErr sync.Once
	start := make(chan struct{})
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			buf := make([]byte, 64<<10)
			for i, p := range paths {
				if err := fetch(client, strings.TrimRight(base, "/")+"/"+strings.TrimLeft(p, "/"), want[i], buf); err != nil {
					errs.Add(1)
					firstErr.Do(func() { fmt.Fprintln(os.Stderr, "first error:", err) })
					return
				}
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	secs := time.Since(t0).Seconds()
	var hwm int64
	for _, p := range strings.Split(pids, ",") {
		if p == "" {
			continue
		}
		kib, err := statusKiB(p, "VmHWM:")
		if err != nil {
			return err
		}
		hwm += kib
	}
	bytesAll := total * int64(clients)
	fmt.Printf("clients=%d files_bytes=%d seconds=%.2f MBps=%.0f hwm_kib=%d errors=%d\n",
		clients, total, secs, float64(bytesAll)/secs/1e6, hwm, errs.Load())
	if errs.Load() > 0 {
		return fmt.Errorf("%d clients failed", errs.Load())
	}
	return nil
}

// fetch GETs url and compares the body with want as it arrives.
func fetch(c *http.Client, url string, want, buf []byte) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	var off int
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if off+n > len(want) || !bytes.Equal(buf[:n], want[off:off+n]) {
				return fmt.Errorf("%s: bytes differ at or after offset %d", url, off)
			}
			off += n
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: after %d bytes: %w", url, off, err)
		}
	}
	if off != len(want) {
		return fmt.Errorf("%s: %d bytes, want %d", url, off, len(want))
	}
	return nil
}

func statusKiB(pid, key string) (int64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, key) {
			f := strings.Fields(strings.TrimPrefix(l, key))
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("/proc/%s/status has no %s", pid, key)
}
