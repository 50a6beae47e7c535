// Command mkfixture builds the tiny test system (Debian's kernel, busybox,
// an initrd that mounts the root by PARTUUID) for `make demo`, and prints
// what it built as JSON.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/imprint-dev/imprint/vmtests/fixture"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: mkfixture DIR")
		os.Exit(2)
	}
	// Absolute: the fixture builds its init program from the module's
	// source directory.
	dir, err := filepath.Abs(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkfixture:", err)
		os.Exit(1)
	}
	f, err := fixture.Build(context.Background(), dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkfixture:", err)
		os.Exit(1)
	}
	b, _ := json.MarshalIndent(map[string]string{
		"rootfs": f.RootfsDir, "kernel": f.Kernel, "initrd": f.Initrd,
		"kernel_version": f.KernelVersion, "file_sha256": f.FileSHA256,
	}, "", "  ")
	fmt.Println(string(b))
}
