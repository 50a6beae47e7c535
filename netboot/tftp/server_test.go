package tftp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/imprint-dev/imprint/internal/testenv"
)

// startServer runs s on 127.0.0.1 and stops it when the test ends, failing
// the test if Serve errs or does not stop.
func startServer(t testing.TB, s *Server) *net.UDPAddr {
	t.Helper()
	if s.Logf == nil {
		s.Logf = func(format string, args ...any) { t.Logf(format, args...) }
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not stop within 10 s of cancel")
		}
	})
	return conn.LocalAddr().(*net.UDPAddr)
}

// randomBytes is deterministic so a failure reproduces.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 1})
	_, _ = r.Read(b)
	return b
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The sizes around every boundary the protocol has: empty, one short
// block, exactly one block (needs an empty final block), one over, an exact
// multiple of 1468, and 1 MiB.
var sizeCases = []struct {
	name string
	size int
}{
	{"empty", 0},
	{"511", 511},
	{"512", 512},
	{"513", 513},
	{"3x1468", 3 * 1468},
	{"1MiB", 1 << 20},
}

func sizesRoot(t *testing.T) (string, map[string][]byte) {
	dir := t.TempDir()
	files := map[string][]byte{}
	for i, c := range sizeCases {
		data := randomBytes(c.size, uint64(i))
		files[c.name] = data
		writeFile(t, filepath.Join(dir, c.name), data)
	}
	return dir, files
}

func needCurl(t *testing.T) {
	t.Helper()
	testenv.NeedTool(t, "curl")
}

// curlGet fetches name with curl and returns the bytes and curl's exit code
// (68 = TFTP file not found, 69 = TFTP permission problem).
func curlGet(t *testing.T, addr *net.UDPAddr, name string, args ...string) ([]byte, int) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := fmt.Sprintf("tftp://127.0.0.1:%d/%s", addr.Port, name)
	argv := append([]string{"-s", "-S", "--max-time", "50", "-o", out}, args...)
	cmd := exec.CommandContext(ctx, "curl", append(argv, url)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("curl: %v", err)
		}
		code = ee.ExitCode()
		t.Logf("curl %s: exit %d: %s", name, code, strings.TrimSpace(stderr.String()))
	}
	data, err := os.ReadFile(out)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return data, code
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s: got %d bytes (sha256 %x), want %d bytes (sha256 %x)",
			what, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

func TestCurlSizes(t *testing.T) {
	needCurl(t)
	dir, files := sizesRoot(t)
	addr := startServer(t, &Server{Handler: DirHandler(dir)})
	clients := []struct {
		name string
		args []string
	}{
		{"default", nil},
		{"blksize1468", []string{"--tftp-blksize", "1468"}},
		{"no-options", []string{"--tftp-no-options"}},
	}
	for _, c := range clients {
		for _, f := range sizeCases {
			t.Run(c.name+"/"+f.name, func(t *testing.T) {
				got, code := curlGet(t, addr, f.name, c.args...)
				if code != 0 {
					t.Fatalf("curl exit %d", code)
				}
				sameBytes(t, f.name, got, files[f.name])
			})
		}
	}
}

func TestClientSizes(t *testing.T) {
	dir, files := sizesRoot(t)
	addr := startServer(t, &Server{Handler: DirHandler(dir)})
	clients := []struct {
		name string
		opts []Option
		want map[string]string // OACK; nil = none expected
	}{
		{"plain", nil, nil},
		{"window4", []Option{{"windowsize", "4"}}, map[string]string{"windowsize": "4"}},
		{"blksize1468-window16", []Option{{"blksize", "1468"}, {"windowsize", "16"}},
			map[string]string{"blksize": "1468", "windowsize": "16"}},
		{"blksize8-window64", []Option{{"blksize", "8"}, {"windowsize", "64"}},
			map[string]string{"blksize": "8", "windowsize": "64"}},
		{"blksize65464", []Option{{"blksize", "65464"}}, map[string]string{"blksize": "65464"}},
	}
	for _, c := range clients {
		for _, f := range sizeCases {
			t.Run(c.name+"/"+f.name, func(t *testing.T) {
				cl := &testClient{Options: c.opts}
				res, err := cl.Get(t.Context(), addr, f.name)
				if err != nil {
					t.Fatal(err)
				}
				sameBytes(t, f.name, res.Data, files[f.name])
				if fmt.Sprint(res.OACK) != fmt.Sprint(c.want) {
					t.Errorf("OACK %v, want %v", res.OACK, c.want)
				}
			})
		}
	}
}

func TestOptions(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(100_000, 7)
	writeFile(t, filepath.Join(dir, "f"), data)
	writeFile(t, filepath.Join(dir, "text"), []byte("a\nb\rc\r\n"))
	for _, c := range []struct {
		name   string
		server Server
		file   string
		mode   string
		opts   []Option
		want   map[string]string // expected OACK, nil = no OACK
	}{
		{name: "tsize", opts: []Option{{"tsize", "0"}}, want: map[string]string{"tsize": "100000"}},
		{name: "all", opts: []Option{{"blksize", "1468"}, {"tsize", "0"}, {"timeout", "3"}, {"windowsize", "8"}},
			want: map[string]string{"blksize": "1468", "tsize": "100000", "timeout": "3", "windowsize": "8"}},
		{name: "upper case names", opts: []Option{{"BLKSIZE", "1024"}, {"TSize", "0"}},
			want: map[string]string{"blksize": "1024", "tsize": "100000"}},
		{name: "blksize above RFC max is clamped", opts: []Option{{"blksize", "70000"}}, want: map[string]string{"blksize": "65464"}},
		{name: "blksize clamped to MaxBlockSize", server: Server{MaxBlockSize: 1468}, opts: []Option{{"blksize", "9000"}},
			want: map[string]string{"blksize": "1468"}},
		{name: "blksize below 8 is ignored", opts: []Option{{"blksize", "7"}}},
		{name: "blksize not a number is ignored", opts: []Option{{"blksize", "big"}, {"tsize", "0"}},
			want: map[string]string{"tsize": "100000"}},
		{name: "windowsize clamped", opts: []Option{{"windowsize", "1000"}}, want: map[string]string{"windowsize": "64"}},
		{name: "windowsize clamped to MaxWindowSize", server: Server{MaxWindowSize: 4}, opts: []Option{{"windowsize", "16"}},
			want: map[string]string{"windowsize": "4"}},
		{name: "windowsize 0 ignored", opts: []Option{{"windowsize", "0"}}},
		{name: "timeout 0 ignored", opts: []Option{{"timeout", "0"}}},
		{name: "timeout 256 ignored", opts: []Option{{"timeout", "256"}}},
		{name: "timeout 255", opts: []Option{{"timeout", "255"}}, want: map[string]string{"timeout": "255"}},
		{name: "unknown option ignored", opts: []Option{{"multicast", ""}, {"foo", "1"}}},
		{name: "rollover", opts: []Option{{"rollover", "1"}}, want: map[string]string{"rollover": "1"}},
		{name: "rollover 2 ignored", opts: []Option{{"rollover", "2"}}},
		{name: "netascii has no tsize", file: "text", mode: ModeNetASCII,
			opts: []Option{{"tsize", "0"}, {"blksize", "512"}}, want: map[string]string{"blksize": "512"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.server
			s.Handler = DirHandler(dir)
			addr := startServer(t, &s)
			file := c.file
			if file == "" {
				file = "f"
			}
			cl := &testClient{Options: c.opts, Mode: c.mode}
			res, err := cl.Get(t.Context(), addr, file)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(res.OACK) != fmt.Sprint(c.want) {
				t.Errorf("OACK %v, want %v", res.OACK, c.want)
			}
			if file == "f" {
				sameBytes(t, file, res.Data, data)
			}
		})
	}
}

func TestNetASCII(t *testing.T) {
	dir := t.TempDir()
	// Long enough to span blocks, with a CR LF pair straddling the
	// 512-byte boundary of the converted stream.
	src := strings.Repeat("x", 511) + "\n" + "a\rb\r\n\n" + strings.Repeat("line\n", 200)
	writeFile(t, filepath.Join(dir, "t.txt"), []byte(src))
	want := strings.NewReplacer("\r", "\r\x00", "\n", "\r\n").Replace(src)
	addr := startServer(t, &Server{Handler: DirHandler(dir)})
	for _, opts := range [][]Option{nil, {{"windowsize", "3"}, {"blksize", "100"}}} {
		cl := &testClient{Mode: "NetASCII", Options: opts}
		res, err := cl.Get(t.Context(), addr, "t.txt")
		if err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "netascii", res.Data, []byte(want))
	}
	// And the plain reader, byte by byte through small buffers.
	var out bytes.Buffer
	r := newNetASCIIReader(strings.NewReader(src))
	buf := make([]byte, 3)
	for {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if out.String() != want {
		t.Errorf("netasciiReader: got %q..., want %q...", out.String()[:40], want[:40])
	}
}

// TestRolloverCurl serves a file of more than 65535 blocks at 512 bytes to
// curl, which like iPXE expects block 0 after 65535.
func TestRolloverCurl(t *testing.T) {
	if testing.Short() {
		t.Skip("33 MiB transfer; TestRolloverSmallBlocks covers the wrap in -short")
	}
	needCurl(t)
	dir := t.TempDir()
	const size = 33<<20 + 123 // 67585 blocks: 2049 past the wrap
	data := randomBytes(size, 40)
	writeFile(t, filepath.Join(dir, "big"), data)
	addr := startServer(t, &Server{Handler: DirHandler(dir)})
	start := time.Now()
	got, code := curlGet(t, addr, "big", "--tftp-blksize", "512")
	if code != 0 {
		t.Fatalf("curl exit %d", code)
	}
	sameBytes(t, "33 MiB", got, data)
	t.Logf("33 MiB at blksize 512 (%d blocks) in %v", size/512+1, time.Since(start).Round(time.Millisecond))
}

// TestRolloverSmallBlocks wraps the block number with blksize 8, cheaply,
// in both rollover modes, with windows straddling the wrap and a block lost
// right at it.
func TestRolloverSmallBlocks(t *testing.T) {
	dir := t.TempDir()
	const size = 65536*8 + 8*100 + 3 // wraps, goes on for 100 blocks
	data := randomBytes(size, 8)
	writeFile(t, filepath.Join(dir, "f"), data)
	addr := startServer(t, &Server{Handler: DirHandler(dir), Timeout: 50 * time.Millisecond})
	for _, c := range []struct {
		name string
		opts []Option
		drop func(blk uint64, n int) bool
	}{
		{"to0-window16", []Option{{"blksize", "8"}, {"windowsize", "16"}}, nil},
		{"to1-window16", []Option{{"blksize", "8"}, {"windowsize", "16"}, {"rollover", "1"}}, nil},
		{"to0-window7-loss-at-wrap", []Option{{"blksize", "8"}, {"windowsize", "7"}},
			func(blk uint64, n int) bool { return n == 0 && (blk == 65535 || blk == 65536 || blk == 65537) }},
		{"to1-window5-loss-at-wrap", []Option{{"blksize", "8"}, {"windowsize", "5"}, {"rollover", "1"}},
			func(blk uint64, n int) bool { return n == 0 && (blk == 65536 || blk == 65540) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := &testClient{Options: c.opts, DropData: c.drop, Timeout: 20 * time.Millisecond}
			res, err := cl.Get(t.Context(), addr, "f")
			if err != nil {
				t.Fatal(err)
			}
			sameBytes(t, "f", res.Data, data)
		})
	}
}

// TestDuplicateAcks: every ACK arrives three times; the server must answer
// only the first (no Sorcerer's Apprentice), so each block goes out once.
func TestDuplicateAcks(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(100*512+17, 3)
	writeFile(t, filepath.Join(dir, "f"), data)
	addr := startServer(t, &Server{Handler: DirHandler(dir)})
	for _, opts := range [][]Option{nil, {{"windowsize", "4"}}, {{"windowsize", "1"}, {"tsize", "0"}}} {
		t.Run(fmt.Sprint(opts), func(t *testing.T) {
			cl := &testClient{Options: opts, DupAcks: 2}
			res, err := cl.Get(t.Context(), addr, "f")
			if err != nil {
				t.Fatal(err)
			}
			sameBytes(t, "f", res.Data, data)
			if want := 101; res.DataPackets != want {
				t.Errorf("%d DATA packets for %d blocks: duplicate ACKs were answered", res.DataPackets, want)
			}
		})
	}
}

// TestLostPackets loses ACKs and DATA and checks the server's timeouts
// bring the transfer through.
func TestLostPackets(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(64*512+100, 4)
	writeFile(t, filepath.Join(dir, "f"), data)
	addr := startServer(t, &Server{Handler: DirHandler(dir), Timeout: 30 * time.Millisecond})
	const blocks = 65
	for _, c := range []struct {
		name     string
		opts     []Option
		dropAck  func(blk uint64, n int) bool
		dropData func(blk uint64, n int) bool
		dups     int // DATA duplicates the client must see
	}{
		{name: "ack3 lost once", dropAck: func(b uint64, n int) bool { return b == 3 && n == 0 }, dups: 1},
		{name: "ack3 lost 3 times", dropAck: func(b uint64, n int) bool { return b == 3 && n < 3 }, dups: 3},
		{name: "ack of OACK lost", opts: []Option{{"tsize", "0"}}, dropAck: func(b uint64, n int) bool { return b == 0 && n == 0 }},
		{name: "data lost lockstep", dropData: func(b uint64, n int) bool { return b%10 == 5 && n == 0 }},
		{name: "window data lost", opts: []Option{{"windowsize", "8"}},
			dropData: func(b uint64, n int) bool { return n == 0 && (b == 1 || b == 5 || b == 17 || b == 30 || b == blocks) }},
		{name: "window ack lost", opts: []Option{{"windowsize", "8"}},
			dropAck: func(b uint64, n int) bool { return n == 0 && (b == 8 || b == 24) }},
		{name: "final block lost twice", dropData: func(b uint64, n int) bool { return b == blocks && n < 2 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The client waits longer than the server so that the
			// server's retransmission, not the client's, recovers.
			cl := &testClient{Options: c.opts, DropAck: c.dropAck, DropData: c.dropData, Timeout: 2 * time.Second}
			res, err := cl.Get(t.Context(), addr, "f")
			if err != nil {
				t.Fatal(err)
			}
			sameBytes(t, "f", res.Data, data)
			// At least one duplicate per lost ACK proves the server
			// retransmitted; more are a slow machine delaying the ACK
			// past the server's 30 ms, not a fault.
			if c.dups > 0 && res.Duplicates < c.dups {
				t.Errorf("client saw %d duplicate blocks, want at least %d", res.Duplicates, c.dups)
			}
		})
	}
}

// rawConn is a client socket for hand-made packets.
func rawConn(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func rrq(name string, opts ...string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(OpRRQ))
	b = append(append(b, name...), 0)
	b = append(b, "octet\x00"...)
	for _, o := range opts {
		b = append(append(b, o...), 0)
	}
	return b
}

// readPkt reads one packet or fails after d.
func readPkt(t *testing.T, c *net.UDPConn, d time.Duration) ([]byte, *net.UDPAddr) {
	t.Helper()
	buf := make([]byte, 70000)
	_ = c.SetReadDeadline(time.Now().Add(d))
	n, from, err := c.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	return buf[:n], from
}

func TestRetryLimit(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), randomBytes(5000, 5))
	addr := startServer(t, &Server{Handler: DirHandler(dir), Timeout: 20 * time.Millisecond, Retries: 3})
	c := rawConn(t)
	if _, err := c.WriteToUDP(rrq("f"), addr); err != nil {
		t.Fatal(err)
	}
	datas := 0
	for {
		p, _ := readPkt(t, c, 2*time.Second)
		op := Opcode(binary.BigEndian.Uint16(p))
		if op == OpERROR {
			break
		}
		if op != OpDATA || binary.BigEndian.Uint16(p[2:]) != 1 {
			t.Fatalf("unexpected %x", p[:4])
		}
		datas++
	}
	if datas != 4 {
		t.Errorf("block 1 sent %d times, want 1 + 3 retries", datas)
	}
}

func TestWriteRefused(t *testing.T) {
	dir := t.TempDir()
	addr := startServer(t, &Server{Handler: DirHandler(dir)})
	cl := &testClient{Op: OpWRQ}
	_, err := cl.Get(t.Context(), addr, "upload")
	if code := errorCode(err); code != int(ErrCodeAccessViolation) {
		t.Errorf("WRQ: %v, want error code 2", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "upload")); err == nil {
		t.Error("WRQ created a file")
	}
	if _, err := exec.LookPath("curl"); err == nil {
		up := filepath.Join(t.TempDir(), "up")
		writeFile(t, up, []byte("hello"))
		url := fmt.Sprintf("tftp://127.0.0.1:%d/upload", addr.Port)
		out, err := exec.Command("curl", "-s", "-S", "--max-time", "20", "-T", up, url).CombinedOutput()
		if err == nil {
			t.Errorf("curl upload succeeded: %s", out)
		}
		t.Logf("curl -T: %v: %s", err, bytes.TrimSpace(out))
	}
}

func TestTraversal(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	secret := []byte("secret outside the root\n")
	writeFile(t, filepath.Join(base, "secret"), secret)
	writeFile(t, filepath.Join(root, "ok"), []byte("ok\n"))
	writeFile(t, filepath.Join(root, "sub", "inner"), []byte("inner\n"))
	must(t, os.Symlink("/etc", filepath.Join(root, "etc")))
	must(t, os.Symlink("../secret", filepath.Join(root, "up")))
	must(t, os.Symlink(filepath.Join(base, "secret"), filepath.Join(root, "abs")))
	must(t, os.Symlink("sub/inner", filepath.Join(root, "link-inside")))
	must(t, os.Symlink("link-inside", filepath.Join(root, "link-to-link")))
	must(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644))
	addr := startServer(t, &Server{Handler: DirHandler(root)})

	const notFound, access = int(ErrCodeFileNotFound), int(ErrCodeAccessViolation)
	for _, c := range []struct {
		name string
		code int    // expected ERROR code; -1 = served
		want string // content when served
	}{
		{"../secret", access, ""},
		{"../etc/passwd", access, ""},
		{"../../../../../../etc/passwd", access, ""},
		{"/etc/passwd", access, ""}, // root/etc is a symlink out
		{"/../secret", access, ""},
		{`..\secret`, access, ""},
		{`..\..\etc\passwd`, access, ""},
		{`sub\..\..\secret`, access, ""},
		{"sub/../ok", access, ""}, // ".." is refused even when it stays inside
		{"etc/passwd", access, ""},
		{"etc", access, ""},
		{"up", access, ""},
		{"abs", access, ""},
		{"%2e%2e/secret", notFound, ""},
		{"%2e%2e%2fsecret", notFound, ""},
		{"/secret", notFound, ""},
		{"fifo", access, ""},
		{"sub", notFound, ""},
		{"/", notFound, ""},
		{"missing", notFound, ""},
		{strings.Repeat("a/", 128) + "ok", access, ""}, // 258 bytes
		{"ok", -1, "ok\n"},
		{"/ok", -1, "ok\n"},
		{"//ok", -1, "ok\n"},
		{"./ok", -1, "ok\n"},
		{`\ok`, -1, "ok\n"},
		{`sub\inner`, -1, "inner\n"},
		{"link-inside", -1, "inner\n"},
		{"link-to-link", -1, "inner\n"},
	} {
		t.Run(strings.ReplaceAll(c.name, "/", "|"), func(t *testing.T) {
			cl := &testClient{Timeout: 5 * time.Second}
			res, err := cl.Get(t.Context(), addr, c.name)
			if c.code < 0 {
				if err != nil {
					t.Fatal(err)
				}
				if string(res.Data) != c.want {
					t.Errorf("got %q, want %q", res.Data, c.want)
				}
				return
			}
			if got := errorCode(err); got != c.code {
				t.Errorf("got %v, want error code %d", err, c.code)
			}
			if res != nil && len(res.Data) > 0 {
				t.Errorf("data leaked: %q", res.Data)
			}
		})
	}

	if _, err := exec.LookPath("curl"); err != nil {
		return
	}
	// The same through a real client; --path-as-is keeps curl from
	// resolving the dots itself.
	for _, name := range []string{"../secret", "/../secret", "..%5c..%5csecret", "%2e%2e/secret", "etc/passwd", "abs", "up"} {
		got, code := curlGet(t, addr, name, "--path-as-is")
		if code != 68 && code != 69 {
			t.Errorf("curl %q: exit %d, want 68 or 69 (TFTP not found / permission)", name, code)
		}
		if len(got) > 0 {
			t.Errorf("curl %q: data leaked: %q", name, got)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestCleanPath(t *testing.T) {
	for _, c := range []struct {
		in, want string
		err      error
	}{
		{"pxelinux.0", "pxelinux.0", nil},
		{"/boot/x64/grubx64.efi", "boot/x64/grubx64.efi", nil},
		{`\boot\x64\grubx64.efi`, "boot/x64/grubx64.efi", nil},
		{"a//b/./c", "a/b/c", nil},
		{"a/b/", "a/b", nil},
		{"..", "", ErrAccess},
		{"a/..", "", ErrAccess},
		{`a\..\..`, "", ErrAccess},
		{"a\x00b", "", ErrAccess},
		{strings.Repeat("x", MaxPathLen), strings.Repeat("x", MaxPathLen), nil},
		{strings.Repeat("x", MaxPathLen+1), "", ErrAccess},
		{"", "", ErrNotFound},
		{"/", "", ErrNotFound},
		{"./", "", ErrNotFound},
		{"...", "...", nil},
		{"%2e%2e/x", "%2e%2e/x", nil},
	} {
		got, err := CleanPath(c.in)
		if got != c.want || !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("CleanPath(%q) = %q, %v; want %q, %v", c.in, got, err, c.want, c.err)
		}
	}
	if !errors.Is(ErrNotFound, fs.ErrNotExist) || !errors.Is(ErrAccess, fs.ErrPermission) {
		t.Error("sentinels do not wrap the io/fs errors")
	}
}

func TestGarbage(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(3000, 9)
	writeFile(t, filepath.Join(dir, "f"), data)
	addr := startServer(t, &Server{Handler: DirHandler(dir), Timeout: 50 * time.Millisecond, Retries: 1})
	c := rawConn(t)
	malformed := [][]byte{
		{0, 1},
		{0, 1, 'f'},
		{0, 1, 'f', 0},
		{0, 1, 'f', 0, 'o', 'c', 't', 'e', 't'},
		{0, 2, 0, 'o', 'c', 't', 'e', 't', 0},
		append(rrq("f"), 0, 'x', 0),
		[]byte("\x00\x01f\x00binary\x00"),
		append([]byte{0, 1}, bytes.Repeat([]byte{'a'}, 65000)...), // oversized
		append(rrq("f"), bytes.Repeat([]byte("x\x00y\x00"), 600)...),
	}
	for _, p := range malformed {
		if _, err := c.WriteToUDP(p, addr); err != nil {
			t.Fatal(err)
		}
		reply, _ := readPkt(t, c, 2*time.Second)
		if Opcode(binary.BigEndian.Uint16(reply)) != OpERROR ||
			ErrorCode(binary.BigEndian.Uint16(reply[2:])) != ErrCodeIllegalOperation {
			t.Errorf("request %q: reply %q, want ERROR 4", trunc(p), reply)
		}
	}
	// Packets that are not requests get no answer at all.
	ignored := [][]byte{
		{}, {0}, {0xff, 0xff, 1, 2}, {0, 3, 0, 1, 'x'}, {0, 4, 0, 1}, {0, 5, 0, 0, 'e', 0}, {0, 6, 'a', 0},
		randomBytes(1000, 11),
	}
	for _, p := range ignored {
		if _, err := c.WriteToUDP(p, addr); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := c.ReadFromUDP(make([]byte, 100)); err == nil {
		t.Errorf("got a %d-byte reply to a non-request", n)
	}
	// Garbage on a transfer's own socket is ignored too.
	if _, err := c.WriteToUDP(rrq("f"), addr); err != nil {
		t.Fatal(err)
	}
	p, peer := readPkt(t, c, 2*time.Second)
	if Opcode(binary.BigEndian.Uint16(p)) != OpDATA {
		t.Fatalf("got %x", p[:4])
	}
	for _, g := range [][]byte{{}, {0}, {0, 4}, {0, 4, 0}, {0, 3, 0, 1}, {0, 4, 0xff, 0xff}, {0, 4, 0, 9}, {0, 1, 'x', 0}} {
		if _, err := c.WriteToUDP(g, peer); err != nil {
			t.Fatal(err)
		}
	}
	// And 100 random packets at the server port, then normal service.
	for i := range 100 {
		g := randomBytes(2+i*7%600, uint64(100+i))
		if i%2 == 0 {
			binary.BigEndian.PutUint16(g, uint16(1+i%2)) // look like an RRQ/WRQ
		}
		if _, err := c.WriteToUDP(g, addr); err != nil {
			t.Fatal(err)
		}
	}
	res, err := (&testClient{}).Get(t.Context(), addr, "f")
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "after garbage", res.Data, data)
}

func trunc(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(1<<20, 12)
	writeFile(t, filepath.Join(dir, "f"), data)
	addr := startServer(t, &Server{Handler: DirHandler(dir)})
	_, haveCurl := exec.LookPath("curl")
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 12 {
		wg.Go(func() {
			if i%2 == 0 && haveCurl == nil {
				out := filepath.Join(t.TempDir(), "out")
				url := fmt.Sprintf("tftp://127.0.0.1:%d/f", addr.Port)
				if b, err := exec.Command("curl", "-s", "-S", "--max-time", "50", "--tftp-blksize", "1468", "-o", out, url).CombinedOutput(); err != nil {
					errs <- fmt.Errorf("curl %d: %v: %s", i, err, b)
					return
				}
				got, err := os.ReadFile(out)
				if err != nil || !bytes.Equal(got, data) {
					errs <- fmt.Errorf("curl %d: wrong data (%v)", i, err)
				}
				return
			}
			res, err := (&testClient{Options: []Option{{"windowsize", strconv.Itoa(1 + i)}}}).Get(context.Background(), addr, "f")
			if err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
				return
			}
			if !bytes.Equal(res.Data, data) {
				errs <- fmt.Errorf("client %d: wrong data", i)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestCancel: a transfer whose client has gone quiet must not hold Serve
// after cancel, and Serve returns nil.
func TestCancel(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), randomBytes(5000, 13))
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := conn.LocalAddr().(*net.UDPAddr)
	s := &Server{Handler: DirHandler(dir), Timeout: time.Minute, Logf: t.Logf}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	for range 3 {
		// Three clients: copies of one request from one socket are
		// duplicates and share a transfer.
		c := rawConn(t)
		if _, err := c.WriteToUDP(rrq("f"), addr); err != nil {
			t.Fatal(err)
		}
		readPkt(t, c, 2*time.Second) // DATA 1, never ACKed
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		t.Logf("stopped in %v", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := conn.WriteTo([]byte{0}, addr); err == nil {
		t.Error("Serve left its socket open")
	}
}

func TestListenAndServe(t *testing.T) {
	// Find a free port, then let ListenAndServe take it.
	probe, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.LocalAddr().(*net.UDPAddr)
	probe.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s := &Server{Handler: FSHandler(fstest.MapFS{"hello": {Data: []byte("hi\n")}})}
	go func() { done <- s.ListenAndServe(ctx, addr.String()) }()
	var res *result
	for range 50 {
		res, err = (&testClient{Timeout: 100 * time.Millisecond, Deadline: 300 * time.Millisecond}).Get(ctx, addr, "hello")
		if err == nil {
			break
		}
	}
	if err != nil || string(res.Data) != "hi\n" {
		t.Errorf("get: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe: %v", err)
	}
	if err := (&Server{}).Serve(context.Background(), mustListen(t)); err == nil {
		t.Error("Serve without a Handler did not fail")
	}
}

func mustListen(t *testing.T) net.PacketConn {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// noSeekFS hides Seek from its files, like a compressed archive would.
type noSeekFS struct{ fs.FS }

type noSeekFile struct{ f fs.File }

func (n noSeekFS) Open(name string) (fs.File, error) {
	f, err := n.FS.Open(name)
	if err != nil {
		return nil, err
	}
	return noSeekFile{f}, nil
}
func (n noSeekFile) Stat() (fs.FileInfo, error) { return n.f.Stat() }
func (n noSeekFile) Read(b []byte) (int, error) { return n.f.Read(b) }
func (n noSeekFile) Close() error               { return n.f.Close() }

func TestHandlers(t *testing.T) {
	big := randomBytes(10_000, 14)
	mfs := fstest.MapFS{
		"boot/ipxe.efi": {Data: big},
		"dir/x":         {Data: []byte("x")},
	}
	failing := errors.New("backend down")
	script := HandlerFunc(func(ctx context.Context, path string, remote net.Addr) (io.ReadSeeker, error) {
		switch path {
		case "boot.ipxe":
			ip := remote.(*net.UDPAddr).IP
			return strings.NewReader("#!ipxe\necho hello " + ip.String() + "\n"), nil
		case "denied":
			return nil, fmt.Errorf("policy: %w", ErrAccess)
		case "perm":
			return nil, fs.ErrPermission
		case "fail":
			return nil, failing
		case "panic":
			panic("handler bug")
		}
		return nil, ErrNotFound
	})
	for _, c := range []struct {
		name    string
		h       Handler
		file    string
		want    []byte
		errCode int
	}{
		{"fs", FSHandler(mfs), "boot/ipxe.efi", big, -1},
		{"fs backslash", FSHandler(mfs), `\boot\ipxe.efi`, big, -1},
		{"fs no seek", FSHandler(noSeekFS{mfs}), "/boot/ipxe.efi", big, -1},
		{"fs dir", FSHandler(mfs), "dir", nil, int(ErrCodeFileNotFound)},
		{"fs missing", FSHandler(mfs), "nope", nil, int(ErrCodeFileNotFound)},
		{"fs dotdot", FSHandler(mfs), "dir/../boot/ipxe.efi", nil, int(ErrCodeAccessViolation)},
		{"generated", script, "boot.ipxe", []byte("#!ipxe\necho hello 127.0.0.1\n"), -1},
		{"generated denied", script, "denied", nil, int(ErrCodeAccessViolation)},
		{"generated fs.ErrPermission", script, "perm", nil, int(ErrCodeAccessViolation)},
		{"generated failure", script, "fail", nil, int(ErrCodeNotDefined)},
		{"generated missing", script, "x", nil, int(ErrCodeFileNotFound)},
		{"handler panics", script, "panic", nil, int(ErrCodeNotDefined)},
		{"missing root", DirHandler(filepath.Join(t.TempDir(), "gone")), "x", nil, int(ErrCodeFileNotFound)},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := startServer(t, &Server{Handler: c.h})
			res, err := (&testClient{Options: []Option{{"tsize", "0"}}}).Get(t.Context(), addr, c.file)
			if c.errCode >= 0 {
				if got := errorCode(err); got != c.errCode {
					t.Errorf("got %v, want error code %d", err, c.errCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sameBytes(t, c.file, res.Data, c.want)
			if res.OACK["tsize"] != strconv.Itoa(len(c.want)) {
				t.Errorf("tsize %q, want %d", res.OACK["tsize"], len(c.want))
			}
		})
	}
}
