// Package qemu starts x86-64 QEMU virtual machines for imprint's VM tests and
// for `imprint vm`: UEFI (OVMF) or legacy BIOS (SeaBIOS) firmware, virtio
// disks, optional direct kernel boot and NICs, and the serial console
// captured in memory, in a log file and, optionally, teed to a writer. Tests
// wait for console markers in order with Expect.
//
// Machines run under TCG software emulation by default, because the hosts
// this project tests on have no KVM; Config.Accel changes that.
package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imprint-dev/imprint/internal/tmpdir"
)

// Firmware is what the machine boots with.
type Firmware int

const (
	// BIOS is SeaBIOS, QEMU's default firmware: no pflash drives.
	BIOS Firmware = iota
	// UEFI is OVMF, as two pflash drives: the read-only code and a per-VM
	// copy of the variable store (NVRAM).
	UEFI
)

func (f Firmware) String() string {
	switch f {
	case BIOS:
		return "bios"
	case UEFI:
		return "uefi"
	}
	return fmt.Sprintf("Firmware(%d)", int(f))
}

// Paths of Debian 12's packages (qemu-system-x86, ovmf, seabios).
const (
	DefaultBinary = "qemu-system-x86_64"
	OVMFCode      = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars      = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	SeaBIOS       = "/usr/share/seabios/bios-256k.bin"
)

// Defaults for a zero Config and a zero Marker.Timeout.
const (
	DefaultMemoryMiB     = 1024
	DefaultMarkerTimeout = 90 * time.Second
	// TimeoutScaleEnv multiplies every marker timeout: a float, default 1,
	// for slow or loaded machines (TCG timings swing 2x between runs).
	TimeoutScaleEnv = "IMPRINT_VM_TIMEOUT_SCALE"
)

// Sentinel errors that Expect's errors wrap.
var (
	ErrTimeout = errors.New("timed out waiting for console marker")
	ErrExited  = errors.New("qemu exited before the console marker")
)

// Disk is a drive attached to the machine.
type Disk struct {
	Path   string
	Format string // default "raw"
	// Interface is QEMU's if= value; default "virtio" (the fixture's
	// initrd loads virtio_blk).
	Interface string
	ReadOnly  bool
	// Snapshot discards this disk's writes when the machine stops; see
	// also Config.Snapshot for all disks.
	Snapshot bool
}

// NIC is a network card and its backend.
type NIC struct {
	// Netdev is the -netdev value without id=, e.g. "user,tftp=DIR,bootfile=F"
	// or "tap,ifname=tap0,script=no,downscript=no".
	Netdev string
	Model  string // default "virtio-net-pci"
	MAC    string // optional, e.g. "52:54:00:12:34:56"
}

// Config describes one machine. The zero value plus a disk or a kernel is a
// working SeaBIOS machine.
type Config struct {
	Firmware Firmware
	Binary   string // default DefaultBinary from $PATH
	Machine  string // default "q35"
	Accel    string // default "tcg"
	CPU      string // -cpu; default QEMU's (qemu64: no SSE4.2)
	// MemoryMiB defaults to DefaultMemoryMiB; CPUs to 1.
	MemoryMiB int
	CPUs      int

	Disks []Disk
	// Snapshot (-snapshot) discards writes to every disk.
	Snapshot bool

	// Kernel, Initrd and Append boot a kernel directly (-kernel/-initrd/
	// -append), skipping the firmware's boot menu.
	Kernel, Initrd, Append string

	// NICs attaches network cards; none means -nic none, so that the
	// firmware does not try to netboot from QEMU's default NIC.
	NICs []NIC
	// Args are appended to QEMU's command line as they are.
	Args []string

	// Dir holds the console log and the NVRAM copy. Empty means a new
	// temporary directory that Close removes.
	Dir string
	// UEFIVars is an NVRAM file to use (and change) as it is, e.g. to boot
	// twice with the same variables. Empty means a fresh copy of OVMFVars
	// in Dir.
	UEFIVars string

	// Console, if set, also gets the serial console output as it arrives
	// (the interactive `imprint vm`). A slow writer slows the guest down.
	Console io.Writer
	// Stdin, if set, is the serial console's input. A terminal is switched
	// to raw mode by QEMU, so keys go to the guest.
	Stdin io.Reader

	// Reboot lets the guest reboot; by default (-no-reboot) a reboot, a
	// kernel panic with panic=N, or a power-off ends QEMU.
	Reboot bool

	// TimeoutScale multiplies marker timeouts; 0 means $IMPRINT_VM_TIMEOUT_SCALE
	// or 1.
	TimeoutScale float64
}

// Marker is console text to wait for. Its timeout starts when the previous
// marker was seen (or when Expect is called, for the first one).
type Marker struct {
	Text    string
	Timeout time.Duration // 0 means DefaultMarkerTimeout; scaled
}

// Available says what the host lacks to run VMs, all of it at once, or nil.
// Tests skip with its message.
func Available() error {
	var missing []error
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		missing = append(missing, fmt.Errorf("%s not in PATH (Debian package qemu-system-x86)", DefaultBinary))
	}
	for _, f := range []struct{ path, pkg string }{{OVMFCode, "ovmf"}, {OVMFVars, "ovmf"}, {SeaBIOS, "seabios"}} {
		if _, err := os.Stat(f.path); err != nil {
			missing = append(missing, fmt.Errorf("%s missing (Debian package %s)", f.path, f.pkg))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("cannot run QEMU VMs (make deps installs what is missing): %w", errors.Join(missing...))
	}
	return nil
}

// TimeoutScale returns the multiplier from $IMPRINT_VM_TIMEOUT_SCALE, or 1.
func TimeoutScale() (float64, error) {
	s := os.Getenv(TimeoutScaleEnv)
	if s == "" {
		return 1, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive number", TimeoutScaleEnv, s)
	}
	return f, nil
}

// VM is a running (or finished) QEMU process.
type VM struct {
	cmd       *exec.Cmd
	args      []string
	dir       string
	ownDir    *tmpdir.Dir // the directory Start made, removed by Close
	vars      string
	logPath   string
	scale     float64
	done      chan struct{} // closed when QEMU has exited and all output is read
	closeOnce sync.Once

	mu      sync.Mutex
	console []byte
	cursor  int           // Expect continues from here
	changed chan struct{} // closed and replaced on every new output
	exitErr error
	stderr  bytes.Buffer
}

// Start starts QEMU. The machine is killed when ctx ends; callers should
// also Close it (in tests: t.Cleanup(func() { vm.Close() })).
func Start(ctx context.Context, cfg Config) (*VM, error) {
	scale := cfg.TimeoutScale
	if scale <= 0 {
		var err error
		if scale, err = TimeoutScale(); err != nil {
			return nil, err
		}
	}
	vm := &VM{scale: scale, dir: cfg.Dir, done: make(chan struct{}), changed: make(chan struct{})}
	if vm.dir == "" {
		d, err := tmpdir.New("", "vm")
		if err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
		vm.dir, vm.ownDir = d.Path, d
	} else if err := os.MkdirAll(vm.dir, 0o755); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	started := false
	defer func() {
		if !started {
			vm.ownDir.Remove()
		}
	}()
	vm.logPath = filepath.Join(vm.dir, "console.log")
	if cfg.Firmware == UEFI {
		vm.vars = cfg.UEFIVars
		if vm.vars == "" {
			vm.vars = filepath.Join(vm.dir, "OVMF_VARS.fd")
			if err := copyFile(OVMFVars, vm.vars); err != nil {
				return nil, fmt.Errorf("qemu: UEFI variable store: %w", err)
			}
		}
	}
	args, err := cfg.args(vm.logPath, vm.vars)
	if err != nil {
		return nil, err
	}
	bin := cfg.Binary
	if bin == "" {
		bin = DefaultBinary
	}
	vm.args = append([]string{bin}, args...)
	cmd := exec.CommandContext(ctx, bin, args...)
	// If the test binary dies without running its cleanups, the kernel
	// still kills QEMU instead of leaving a guest spinning a core.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// SIGTERM first: QEMU then restores a terminal it put in raw mode.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = killGrace
	cmd.Stdin = cfg.Stdin
	cmd.Stderr = &lockedWriter{mu: &vm.mu, w: &vm.stderr}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu: start %s: %w", bin, err)
	}
	started = true
	vm.cmd = cmd
	go vm.read(stdout, cfg.Console)
	return vm, nil
}

func (cfg *Config) args(logPath, vars string) ([]string, error) {
	machine, accel := cfg.Machine, cfg.Accel
	if machine == "" {
		machine = "q35"
	}
	if accel == "" {
		accel = "tcg"
	}
	mem := cfg.MemoryMiB
	if mem == 0 {
		mem = DefaultMemoryMiB
	}
	cpus := cfg.CPUs
	if cpus == 0 {
		cpus = 1
	}
	a := []string{
		"-machine", machine + ",accel=" + accel,
		"-m", strconv.Itoa(mem),
		"-smp", strconv.Itoa(cpus),
		"-display", "none",
		"-monitor", "none",
		"-parallel", "none",
		// The console comes to us on stdout, and QEMU itself writes the log
		// file, so it is complete even if this process dies first.
		"-chardev", "stdio,id=console,signal=off,logfile=" + escape(logPath),
		"-serial", "chardev:console",
	}
	if cfg.CPU != "" {
		a = append(a, "-cpu", cfg.CPU)
	}
	switch cfg.Firmware {
	case BIOS:
	case UEFI:
		a = append(a,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+escape(OVMFCode),
			"-drive", "if=pflash,format=raw,unit=1,file="+escape(vars))
	default:
		return nil, fmt.Errorf("qemu: unknown firmware %v", cfg.Firmware)
	}
	if !cfg.Reboot {
		a = append(a, "-no-reboot")
	}
	if cfg.Snapshot {
		a = append(a, "-snapshot")
	}
	for _, d := range cfg.Disks {
		if d.Path == "" {
			return nil, errors.New("qemu: a disk without a path")
		}
		format, iface := d.Format, d.Interface
		if format == "" {
			format = "raw"
		}
		if iface == "" {
			iface = "virtio"
		}
		v := "file=" + escape(d.Path) + ",format=" + format + ",if=" + iface
		if d.ReadOnly {
			v += ",readonly=on"
		}
		if d.Snapshot {
			v += ",snapshot=on"
		}
		a = append(a, "-drive", v)
	}
	if cfg.Kernel != "" {
		a = append(a, "-kernel", cfg.Kernel)
		if cfg.Initrd != "" {
			a = append(a, "-initrd", cfg.Initrd)
		}
		if cfg.Append != "" {
			a = append(a, "-append", cfg.Append)
		}
	} else if cfg.Initrd != "" || cfg.Append != "" {
		return nil, errors.New("qemu: an initrd or kernel command line without a kernel")
	}
	if len(cfg.NICs) == 0 {
		a = append(a, "-nic", "none")
	}
	for i, n := range cfg.NICs {
		id := fmt.Sprintf("net%d", i)
		model := n.Model
		if model == "" {
			model = "virtio-net-pci"
		}
		dev := model + ",netdev=" + id
		if n.MAC != "" {
			dev += ",mac=" + n.MAC
		}
		a = append(a, "-netdev", n.Netdev+",id="+id, "-device", dev)
	}
	return append(a, cfg.Args...), nil
}

// escape doubles commas, QEMU's escape inside option values.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func (vm *VM) read(stdout io.Reader, tee io.Writer) {
	buf := make([]byte, 32<<10)
	for {
		n, err := stdout.Read(buf)
		if n > 0 {
			if tee != nil {
				// A failing tee (a closed terminal) must not stop the
				// capture the tests depend on.
				_, _ = tee.Write(buf[:n])
			}
			vm.mu.Lock()
			vm.console = append(vm.console, buf[:n]...)
			close(vm.changed)
			vm.changed = make(chan struct{})
			vm.mu.Unlock()
		}
		if err != nil {
			break
		}
	}
	err := vm.cmd.Wait()
	vm.mu.Lock()
	vm.exitErr = err
	vm.mu.Unlock()
	close(vm.done)
}

// Args is QEMU's full command line, for logs and bug reports.
func (vm *VM) Args() []string { return append([]string(nil), vm.args...) }

// Dir is the machine's directory (console log, NVRAM copy).
func (vm *VM) Dir() string { return vm.dir }

// ConsoleLog is the path of the file QEMU logs the serial console to.
func (vm *VM) ConsoleLog() string { return vm.logPath }

// VarsPath is the UEFI variable store the machine uses, "" with BIOS; it
// stays after the machine stops, for checks of what the guest wrote.
func (vm *VM) VarsPath() string { return vm.vars }

// Console returns all console output so far.
func (vm *VM) Console() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return string(vm.console)
}

// Stderr returns what QEMU itself printed (warnings, errors).
func (vm *VM) Stderr() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.stderr.String()
}

// Done is closed when QEMU has exited.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// Expect waits for each marker's text on the console, in order: each is
// looked for only after the end of the previous one, and later calls go on
// from where the last one stopped. It fails at the first marker that does
// not appear within its (scaled) timeout, or when QEMU exits first; the
// error then holds the last lines of the console.
func (vm *VM) Expect(ctx context.Context, markers ...Marker) error {
	for i, m := range markers {
		timeout := m.Timeout
		if timeout == 0 {
			timeout = DefaultMarkerTimeout
		}
		timeout = time.Duration(float64(timeout) * vm.scale)
		if err := vm.expectOne(ctx, m.Text, timeout); err != nil {
			return fmt.Errorf("marker %d of %d %q: %w", i+1, len(markers), m.Text, err)
		}
	}
	return nil
}

func (vm *VM) expectOne(ctx context.Context, text string, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		vm.mu.Lock()
		if i := bytes.Index(vm.console[vm.cursor:], []byte(text)); i >= 0 {
			vm.cursor += i + len(text)
			vm.mu.Unlock()
			return nil
		}
		changed := vm.changed
		vm.mu.Unlock()
		select {
		case <-changed:
		case <-vm.done:
			// All output was read before done closed: one last look.
			vm.mu.Lock()
			found := bytes.Contains(vm.console[vm.cursor:], []byte(text))
			vm.mu.Unlock()
			if found {
				continue
			}
			return vm.failure(ErrExited, "")
		case <-timer.C:
			return vm.failure(ErrTimeout, fmt.Sprintf(" after %v", timeout))
		case <-ctx.Done():
			return vm.failure(ctx.Err(), "")
		}
	}
}

// tailLines is how much console an Expect error quotes: enough to see the
// last boot stage without drowning the test log.
const tailLines = 40

func (vm *VM) failure(cause error, detail string) error {
	vm.mu.Lock()
	tail := lastLines(string(vm.console), tailLines)
	exit, stderr := vm.exitErr, strings.TrimSpace(vm.stderr.String())
	vm.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%s", detail)
	if cause == ErrExited {
		fmt.Fprintf(&b, " (qemu: %v)", exitStatus(exit))
	}
	if stderr != "" {
		fmt.Fprintf(&b, "\nqemu stderr:\n%s", lastLines(stderr, 10))
	}
	fmt.Fprintf(&b, "\nlast %d console lines (full log %s):\n%s", tailLines, vm.logPath, tail)
	return fmt.Errorf("%w%s", cause, b.String())
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func lastLines(s string, n int) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Wait waits for QEMU to exit (the guest powered off, or with -no-reboot
// rebooted or panicked) and returns its exit error. It returns ctx's error,
// leaving QEMU running, if ctx ends first.
func (vm *VM) Wait(ctx context.Context) error {
	select {
	case <-vm.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.exitErr != nil {
		if s := strings.TrimSpace(vm.stderr.String()); s != "" {
			return fmt.Errorf("qemu: %w: %s", vm.exitErr, lastLines(s, 10))
		}
		return fmt.Errorf("qemu: %w", vm.exitErr)
	}
	return nil
}

// killGrace is how long QEMU gets to exit on SIGTERM before SIGKILL; it
// exits at once when healthy.
const killGrace = 3 * time.Second

// Kill stops QEMU if it still runs and waits until it is gone.
func (vm *VM) Kill() {
	select {
	case <-vm.done:
		return
	default:
	}
	_ = vm.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-vm.done:
	case <-time.After(killGrace):
		_ = vm.cmd.Process.Kill()
		<-vm.done
	}
}

// Close kills QEMU and removes the machine's directory if Start made it.
// Safe to call more than once.
func (vm *VM) Close() error {
	vm.Kill()
	var err error
	vm.closeOnce.Do(func() {
		err = vm.ownDir.Remove()
	})
	return err
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}
