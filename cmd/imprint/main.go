// Command imprint makes many machines run one master root image.
package main

import (
	"context"
	"os"
	"os/signal"
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
	if os.Getpid() == 1 {
		// imprint is the /init of its own initramfs: the agent.
		_ = agent.Main(context.Background(), os.Stdout)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], cli.Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	stop()
	os.Exit(code)
}
