// Command imprint-tftpd runs imprint's TFTP server on a directory, for the
// TFTP benchmark (bench/tftp/run.sh) and for trying the server by hand:
//
//	imprint-tftpd -addr 127.0.0.1:6969 -root /srv/tftp [-v]
//
// It stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/imprint-dev/imprint/netboot/tftp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6969", "UDP address to listen on")
	root := flag.String("root", ".", "directory to serve")
	verbose := flag.Bool("v", false, "log every transfer")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "imprint-tftpd:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "imprint-tftpd:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s := &tftp.Server{Handler: tftp.DirHandler(*root)}
	if *verbose {
		s.Logf = log.Printf
	}
	if err := s.ListenAndServe(ctx, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "imprint-tftpd:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}
