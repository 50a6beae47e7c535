package qemu

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/internal/testenv"
)

// fakeQEMU writes a script standing in for QEMU: it prints body's output on
// stdout (the console) and then does what tail says.
func fakeQEMU(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fake-qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func start(t *testing.T, cfg Config) *VM {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	vm, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	return vm
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestExpectInOrder(t *testing.T) {
	var tee syncBuffer
	vm := start(t, Config{Binary: fakeQEMU(t, `printf 'boot\r\nstage one\r\n'; sleep 0.2; printf 'stage two\r\nlast\r\n'; exec sleep 60`), Console: &tee})
	ctx := t.Context()
	if err := vm.Expect(ctx, Marker{Text: "stage one", Timeout: 10 * time.Second}, Marker{Text: "last", Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	// "stage two" came before "last": a later Expect must not find it.
	err := vm.Expect(ctx, Marker{Text: "stage two", Timeout: 300 * time.Millisecond})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("marker already passed: %v, want ErrTimeout", err)
	}
	if !strings.Contains(err.Error(), "last") || !strings.Contains(err.Error(), "stage one") {
		t.Errorf("the error should quote the console:\n%v", err)
	}
	if got := tee.String(); !strings.Contains(got, "stage two\r\nlast") {
		t.Errorf("tee got %q", got)
	}
	start := time.Now()
	vm.Kill()
	if time.Since(start) > 5*time.Second {
		t.Error("Kill took too long")
	}
	if err := vm.Wait(ctx); err == nil {
		t.Error("Wait after Kill: want the kill reported")
	}
}

func TestExpectFailsFastWhenQEMUExits(t *testing.T) {
	vm := start(t, Config{Binary: fakeQEMU(t, `printf 'kernel panic\n'; echo 'qemu: something wrong' >&2; exit 3`)})
	begin := time.Now()
	err := vm.Expect(t.Context(), Marker{Text: "never printed", Timeout: time.Minute})
	if !errors.Is(err, ErrExited) {
		t.Fatalf("got %v, want ErrExited", err)
	}
	if time.Since(begin) > 10*time.Second {
		t.Errorf("took %v: should end when QEMU exits", time.Since(begin))
	}
	for _, want := range []string{"kernel panic", "something wrong", "exit status 3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// Output written just before exiting still counts.
	vm2 := start(t, Config{Binary: fakeQEMU(t, `printf 'bye'`)})
	if err := vm2.Expect(t.Context(), Marker{Text: "bye", Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := vm2.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestTimeoutScale(t *testing.T) {
	t.Setenv(TimeoutScaleEnv, "0.01")
	vm := start(t, Config{Binary: fakeQEMU(t, `exec sleep 60`)})
	begin := time.Now()
	err := vm.Expect(t.Context(), Marker{Text: "x", Timeout: 100 * time.Second})
	if !errors.Is(err, ErrTimeout) || time.Since(begin) > 10*time.Second {
		t.Fatalf("scaled 100s by 0.01: %v after %v", err, time.Since(begin))
	}
	t.Setenv(TimeoutScaleEnv, "fast")
	if _, err := Start(t.Context(), Config{Binary: fakeQEMU(t, "exit 0"), Dir: t.TempDir()}); err == nil {
		t.Fatal("a bad scale should be refused")
	}
}

func TestContextKillsQEMU(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	vm, err := Start(ctx, Config{Binary: fakeQEMU(t, `exec sleep 60`), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	cancel()
	select {
	case <-vm.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("QEMU still runs after its context ended")
	}
}

func TestArgs(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{
		Firmware: UEFI,
		Disks:    []Disk{{Path: "/d/a,b.img"}, {Path: "/d/c.qcow2", Format: "qcow2", Interface: "ide", ReadOnly: true}},
		Snapshot: true,
		Kernel:   "/k", Initrd: "/i", Append: "root=PARTUUID=x console=ttyS0",
		NICs: []NIC{{Netdev: "user,tftp=/srv", MAC: "52:54:00:00:00:01"}},
		Args: []string{"-boot", "n"},
	}
	got, err := cfg.args(filepath.Join(dir, "console.log"), filepath.Join(dir, "vars.fd"))
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(got, " ")
	for _, want := range []string{
		"-machine q35,accel=tcg", "-m 1024",
		"-drive if=pflash,format=raw,unit=0,readonly=on,file=" + OVMFCode,
		"-drive if=pflash,format=raw,unit=1,file=" + filepath.Join(dir, "vars.fd"),
		"-serial chardev:console", "logfile=" + filepath.Join(dir, "console.log"),
		"-no-reboot", "-snapshot",
		"-drive file=/d/a,,b.img,format=raw,if=virtio",
		"-drive file=/d/c.qcow2,format=qcow2,if=ide,readonly=on",
		"-kernel /k -initrd /i -append root=PARTUUID=x console=ttyS0",
		"-netdev user,tftp=/srv,id=net0 -device virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("command line lacks %q:\n%s", want, line)
		}
	}
	if !strings.HasSuffix(line, "-boot n") {
		t.Errorf("extra args not last: %s", line)
	}
	if strings.Contains(line, "-nic none") {
		t.Error("-nic none with a NIC")
	}
	bios, err := (&Config{Reboot: true}).args("/log", "")
	if err != nil {
		t.Fatal(err)
	}
	bl := strings.Join(bios, " ")
	if strings.Contains(bl, "pflash") || strings.Contains(bl, "-no-reboot") || !strings.Contains(bl, "-nic none") {
		t.Errorf("BIOS machine: %s", bl)
	}
	if _, err := (&Config{Append: "x"}).args("/log", ""); err == nil {
		t.Error("a command line without a kernel should be refused")
	}
}

func TestUEFIVarsAreAPerVMCopy(t *testing.T) {
	testenv.NeedFile(t, OVMFVars, "ovmf")
	vm := start(t, Config{Firmware: UEFI, Binary: fakeQEMU(t, "exit 0")})
	if vm.VarsPath() == OVMFVars || filepath.Dir(vm.VarsPath()) != vm.Dir() {
		t.Fatalf("vars %s should be a copy in %s", vm.VarsPath(), vm.Dir())
	}
	a, _ := os.ReadFile(OVMFVars)
	b, err := os.ReadFile(vm.VarsPath())
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("copy differs from the template: %v", err)
	}
	if !strings.Contains(strings.Join(vm.Args(), " "), "unit=1,file="+vm.VarsPath()) {
		t.Errorf("the copy is not the second pflash drive: %v", vm.Args())
	}
}

func TestCloseRemovesOwnDir(t *testing.T) {
	vm, err := Start(t.Context(), Config{Binary: fakeQEMU(t, "exec sleep 60")})
	if err != nil {
		t.Fatal(err)
	}
	dir := vm.Dir()
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", dir, err)
	}
	if err := vm.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestKillEscalatesWhenSIGTERMIsIgnored(t *testing.T) {
	vm := start(t, Config{Binary: fakeQEMU(t, `trap '' TERM; printf 'up\n'; while :; do sleep 1; done`)})
	if err := vm.Expect(t.Context(), Marker{Text: "up", Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	vm.Kill()
	if d := time.Since(begin); d > killGrace+5*time.Second {
		t.Errorf("Kill took %v", d)
	}
}
