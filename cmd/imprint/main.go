// Command imprint makes many machines run one master root image.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/imprint-dev/imprint/agent"
	"github.com/imprint-dev/imprint/cli"
)

func main() {
	if len(os.Args) > 0 && os.Args[0] == agent.ServerArgv0 {
		// The on-demand root's server, started by the agent.
		_ = agent.ServerMain(os.Stdout)
		os.Exit(1)
	}
	if len(os.Args) > 0 && os.Args[0] == agent.SeederArgv0 {
		// The seeder of a RAM root, started by the agent.
		if agent.SeedMain(os.Stdout) != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getpid() == 1 {
		// imprint is the /init of its own initramfs: the agent.
		_ = agent.Main(context.Background(), os.Stdout)
		os.Exit(1)
	}
	stopProfile := startCPUProfile(os.Getenv("IMPRINT_CPUPROFILE"))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], cli.Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	stop()
	stopProfile()
	os.Exit(code)
}

// startCPUProfile writes a CPU profile of the command to path when path is
// not empty (IMPRINT_CPUPROFILE, for docs/performance.md): an environment
// variable rather than a flag, so it profiles any command, deploy included,
// without a flag in every command's help.
func startCPUProfile(path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		os.Stderr.WriteString("imprint: IMPRINT_CPUPROFILE: " + err.Error() + "\n")
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
