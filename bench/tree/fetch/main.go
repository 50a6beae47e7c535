// Command fetch measures how fast one imprint server sends an image: it
// fetches every stored chunk of NAME:VERSION from a store URL with N
// parallel workers, as N deploying clients would, but discards the bytes,
// so the server (not a client's decompress/hash/write) is what is timed.
// It prints the image bytes per second (uncompressed chunk sizes).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
)

func main() {
	url := flag.String("url", "", "store URL, e.g. http://127.0.0.1:8080/")
	ref := flag.String("image", "", "NAME[:VERSION]")
	workers := flag.Int("workers", 4, "parallel fetches")
	rounds := flag.Int("rounds", 1, "fetch every chunk this many times")
	same := flag.Bool("lockstep", false, "every worker fetches every chunk, in order, as the children of one node in a cut-through tree do")
	flag.Parse()
	if err := run(*url, *ref, *workers, *rounds, *same); err != nil {
		fmt.Fprintln(os.Stderr, "fetch:", err)
		os.Exit(1)
	}
}

func run(url, ref string, workers, rounds int, lockstep bool) error {
	ctx := context.Background()
	src, err := store.OpenHTTP(url)
	if err != nil {
		return err
	}
	name, version, _ := strings.Cut(ref, ":")
	r, err := store.Resolve(ctx, src, name, version)
	if err != nil {
		return err
	}
	type job struct {
		sum string
		n   int64
	}
	var jobs []job
	for _, nc := range r.Manifest.Contents() {
		for i, s := range nc.Content.Chunks {
			if s != image.ZeroChunk {
				jobs = append(jobs, job{s, nc.Content.ChunkLen(i, r.Manifest.ChunkSize)})
			}
		}
	}
	var total atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	get := func(j job) {
		if _, err := src.Chunk(ctx, j.sum); err != nil {
			once.Do(func() { firstErr = err })
			return
		}
		total.Add(j.n)
	}
	start := time.Now()
	if lockstep {
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					for _, j := range jobs {
						get(j)
					}
				}
			}()
		}
	} else {
		ch := make(chan job)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range ch {
					get(j)
				}
			}()
		}
		for range rounds {
			for _, j := range jobs {
				ch <- j
			}
		}
		close(ch)
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	el := time.Since(start).Seconds()
	fmt.Printf("%.1f MB/s (%d bytes in %.2f s, %d workers)\n", float64(total.Load())/el/1e6, total.Load(), el, workers)
	return nil
}
