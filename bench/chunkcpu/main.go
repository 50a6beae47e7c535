// Command chunkcpu measures the CPU one chunk costs the on-demand root's
// server: zstd decoding (image.Decoder, the agent's) and SHA-256 of 1 MiB
// chunks of a real file, and says which CPU features Go sees. Run natively
// it gives the hardware's figure; run under QEMU's user-mode emulator with
// a CPU model (run.sh) it gives TCG's, the same translator the diskless
// bench's guests run on, so the cost of a CPU model's paths is seen without
// booting a VM.
//
//	go run ./bench/chunkcpu [-chunks 32] [FILE]   # FILE.zst is read decompressed
//	bash bench/chunkcpu/run.sh [FILE]     # native, then qemu-x86_64 -cpu qemu64 and max
//
// Times are the thread's CPU time (getrusage), the best of 4 passes: on a
// shared machine wall time measures the neighbours.
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"

	"github.com/imprint-dev/imprint/image"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "chunkcpu:", err)
		os.Exit(1)
	}
}

func run() error {
	n := flag.Int("chunks", 32, "how many 1 MiB chunks of FILE to measure")
	flag.Parse()
	file := "/proc/self/exe"
	if flag.NArg() > 0 {
		file = flag.Arg(0)
	}
	// RUSAGE_THREAD times this thread: keep the goroutine on it.
	runtime.LockOSThread()
	const cs = image.DefaultChunkSize
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	// A .zst file (the cached Debian root tarball) is read decompressed:
	// a root's bytes, compressible as the store sees them.
	var in io.Reader = f
	if strings.HasSuffix(file, ".zst") {
		zr, err := zstd.NewReader(f)
		if err != nil {
			return err
		}
		defer zr.Close()
		in = zr
	}
	data := make([]byte, int64(*n)*cs)
	got, err := io.ReadFull(in, data)
	if err != nil && err != io.ErrUnexpectedEOF {
		return err
	}
	chunks := got / cs
	if chunks == 0 {
		return fmt.Errorf("%s: less than one %d-byte chunk", file, cs)
	}
	// The store's encoder settings (store.Dir.PutChunk).
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return err
	}
	stored, sums := make([][]byte, chunks), make([]string, chunks)
	zbytes := 0
	for i := range chunks {
		c := data[i*cs : (i+1)*cs]
		stored[i], sums[i] = enc.EncodeAll(c, nil), image.HashBytes(c)
		zbytes += len(stored[i])
	}
	dec, err := image.NewDecoder()
	if err != nil {
		return err
	}
	defer dec.Close()
	raw, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.IgnoreChecksum(true))
	if err != nil {
		return err
	}
	defer raw.Close()
	buf := make([]byte, 0, cs)
	best := func(f func(i int) error) (time.Duration, error) {
		b := time.Duration(1<<63 - 1)
		for range 4 {
			t0 := cputime()
			for i := range chunks {
				if err := f(i); err != nil {
					return 0, err
				}
			}
			b = min(b, (cputime()-t0)/time.Duration(chunks))
		}
		return b, nil
	}
	dz, err := best(func(i int) error { _, err := raw.DecodeAll(stored[i], buf[:0]); return err })
	if err != nil {
		return err
	}
	dh, _ := best(func(i int) error { sha256.Sum256(data[i*cs : (i+1)*cs]); return nil })
	dd, err := best(func(i int) error { _, err := dec.Decode(stored[i], sums[i], cs, buf); return err })
	if err != nil {
		return err
	}
	fmt.Printf("CPU features Go sees: AVX2 %v, BMI2 %v, SSE4.1 %v, SSSE3 %v, AES %v\n",
		cpu.X86.HasAVX2, cpu.X86.HasBMI2, cpu.X86.HasSSE41, cpu.X86.HasSSSE3, cpu.X86.HasAES)
	fmt.Printf("%d chunks of %s (zstd %d KiB a chunk): zstd decode %v, SHA-256 %v, image.Decoder.Decode (both) %v a chunk\n",
		chunks, file, zbytes/chunks>>10, dz.Round(10*time.Microsecond), dh.Round(10*time.Microsecond), dd.Round(10*time.Microsecond))
	return nil
}

func cputime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
