package cli

import (
	"fmt"
	"os"

	"github.com/google/renameio/v2"
	"github.com/imprint-dev/imprint/agent"
	"github.com/spf13/cobra"
)

func newInitrd(e *env) *cobra.Command {
	var o agent.InitrdOptions
	var out string
	c := &cobra.Command{
		Use:   "initrd --modules /lib/modules/RELEASE --out FILE",
		Short: "Make the agent initramfs (this imprint binary as /init, the kernel's network, disk and filesystem modules)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.ModulesDir == "" || out == "" {
				return fmt.Errorf("--modules and --out are required")
			}
			if o.Self == "" {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				o.Self = self
			}
			b, mods, err := agent.BuildInitrd(o)
			if err != nil {
				return err
			}
			if err := renameio.WriteFile(out, b, 0o644); err != nil {
				return err
			}
			e.printf("wrote %s: %d bytes, %d kernel modules\n", out, len(b), len(mods))
			return nil
		},
	}
	c.Flags().StringVar(&o.ModulesDir, "modules", "", "the kernel's modules directory, /lib/modules/RELEASE")
	c.Flags().StringVar(&o.Release, "release", "", "kernel release (default: the modules directory's name)")
	c.Flags().StringVar(&o.Self, "imprint", "", "static imprint binary to use as /init (default: this one)")
	c.Flags().StringVar(&out, "out", "", "where to write the initramfs")
	c.Flags().StringArrayVar(&o.Trust, "trust", nil, "bake this minisign public key into the agent: it then runs and installs only images signed by it (repeatable)")
	return c
}
