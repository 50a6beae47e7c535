// Command gen makes what the Debian package ships beside the binary: man
// pages and shell completions generated from cli's command tree, and the
// package version derived from `git describe`. It is a separate program so
// that cobra's doc generator (and go-md2man) stay out of the product binary.
//
//	gen docs -root DIR -version V -date EPOCH
//	gen debversion -describe "$(git describe --tags --always --dirty)" -date EPOCH
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "gen: %v\n", err)
		os.Exit(2)
	}
}

var errUsage = errors.New("usage: gen docs -root DIR -version V -date EPOCH | gen debversion -describe S -date EPOCH")

func run(args []string, out io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	date := fs.String("date", "", "commit time, seconds since the epoch (git log -1 --format=%ct)")
	switch args[0] {
	case "docs":
		root := fs.String("root", "", "package staging root: files go under DIR/usr/share")
		version := fs.String("version", "", "version shown in the man page footer")
		if err := fs.Parse(args[1:]); err != nil {
			return fmt.Errorf("docs: %w", err)
		}
		t, err := parseEpoch(*date)
		if err != nil {
			return err
		}
		if *root == "" || *version == "" {
			return fmt.Errorf("docs: -root and -version are required: %w", errUsage)
		}
		return writeDocs(*root, *version, t)
	case "debversion":
		describe := fs.String("describe", "", "output of git describe --tags --always --dirty")
		if err := fs.Parse(args[1:]); err != nil {
			return fmt.Errorf("debversion: %w", err)
		}
		t, err := parseEpoch(*date)
		if err != nil {
			return err
		}
		v, err := debVersion(*describe, t)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(out, v)
		return err
	default:
		return fmt.Errorf("unknown mode %q: %w", args[0], errUsage)
	}
}

func parseEpoch(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, fmt.Errorf("-date %q: want seconds since the epoch, as git log -1 --format=%%ct prints", s)
	}
	return time.Unix(n, 0).UTC(), nil
}
