// Package cli maps the imprint command line onto the packages that do the
// work: one file per verb, flags in, calls out, no logic of its own.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// Stdio is where a command reads and writes.
type Stdio struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// exitError carries a process exit code with an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// env is what every verb gets: where to print and how.
type env struct {
	io   Stdio
	json bool
}

func (e *env) isTerminal() bool {
	f, ok := e.io.Err.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (e *env) printf(format string, a ...any) {
	if !e.json {
		fmt.Fprintf(e.io.Out, format, a...)
	}
}

// version is stamped at link time by the package build:
// -ldflags "-X github.com/imprint-dev/imprint/cli.version=V". It is the
// one variable the linker can set; nothing assigns it at run time.
var version string

// Version is what `imprint --version` prints: the stamped version, else the
// module version the go command recorded from VCS, else "devel".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// NewRoot builds the imprint command tree.
func NewRoot(stdio Stdio) *cobra.Command {
	e := &env{io: stdio}
	root := &cobra.Command{
		Use:           "imprint",
		Short:         "Make many machines run one master root image, bit-for-bit",
		Version:       Version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdio.In)
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	root.PersistentFlags().BoolVar(&e.json, "json", false, "machine-readable output: one JSON object (or one event per line)")
	root.AddCommand(newBuild(e), newDeploy(e), newVerify(e), newInspect(e), newBoot(e), newVM(e), newInitrd(e), newServe(e), newExport(e), newKey(e), newIdentity(e), newBless(e), newRollback(e), newSlots(e), newSync(e), newPrune(e), newStatus(e))
	return root
}

// Run executes the command line and returns the process exit code.
func Run(ctx context.Context, args []string, stdio Stdio) int {
	root := NewRoot(stdio)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stdio.Err, "imprint: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}
