package cli

import (
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/imprint-dev/imprint/deploy"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/identity"
	"github.com/imprint-dev/imprint/store"
	"github.com/spf13/cobra"
)

func newIdentity(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "identity",
		Short: "Preview and check what a node or class gets at boot (files, layers, writable paths)",
	}
	c.AddCommand(newIdentityPreview(e), newIdentityCheck(e))
	return c
}

// treeFlags name the image to look into: a root tree, or an image in a
// store.
type treeFlags struct {
	rootfs, image, from string
}

func (t *treeFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&t.rootfs, "rootfs", "", "root filesystem directory")
	c.Flags().StringVar(&t.image, "image", "", "image NAME[:VERSION] in the store --from names")
	c.Flags().StringVar(&t.from, "from", "", "store directory, http(s) store or deployed disk that holds --image")
}

func (t *treeFlags) open(cmd *cobra.Command) (fs.FS, func(), error) {
	switch {
	case t.rootfs != "" && t.image != "":
		return nil, nil, fmt.Errorf("give --rootfs or --image, not both")
	case t.rootfs != "":
		st, err := os.Stat(t.rootfs)
		if err != nil {
			return nil, nil, fmt.Errorf("--rootfs: %w", err)
		}
		if !st.IsDir() {
			return nil, nil, fmt.Errorf("--rootfs %s is not a directory", t.rootfs)
		}
		return os.DirFS(t.rootfs), func() {}, nil
	case t.image != "":
		if t.from == "" {
			return nil, nil, fmt.Errorf("--image needs --from STORE")
		}
		src, done, err := openSource(t.from)
		if err != nil {
			return nil, nil, fmt.Errorf("--from: %w", err)
		}
		name, version, _ := strings.Cut(t.image, ":")
		srcs := []store.Source{src}
		res, err := fetch.New(srcs, fetch.Options{}).Resolve(cmd.Context(), name, version, nil)
		if err != nil {
			done()
			return nil, nil, fmt.Errorf("--image %s: %w", t.image, err)
		}
		fsys, closeFS, err := deploy.OpenRootFS(cmd.Context(), srcs, res, "")
		if err != nil {
			done()
			return nil, nil, fmt.Errorf("--image %s: %w", t.image, err)
		}
		return fsys, func() { closeFS(); done() }, nil
	}
	return nil, nil, fmt.Errorf("give --rootfs DIR or --image NAME --from STORE")
}

func newIdentityPreview(e *env) *cobra.Command {
	var t treeFlags
	var node, class string
	c := &cobra.Command{
		Use:   "preview (--rootfs DIR | --image NAME --from STORE) --node NAME [--class CLASS]",
		Short: "Show the class, files, layers, writable paths, hostname and machine-id a node gets at boot",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if node == "" {
				return fmt.Errorf("--node is required")
			}
			if err := identity.ValidNode(node); err != nil {
				return fmt.Errorf("--node: %w", err)
			}
			fsys, done, err := t.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			p, err := identity.Resolve(fsys, node, class)
			if err != nil {
				return err
			}
			if e.json {
				e.emitJSON(p)
				return nil
			}
			e.printf("node %s\n  class %s (fallback %s)\n  hostname %s\n  machine-id %s\n", p.Node, p.Class, strings.Join(p.Chain, " -> "), p.Hostname, p.MachineID)
			for _, f := range p.Files {
				e.printf("  file %s <- %s (%s)\n", f.Path, f.From, f.For)
			}
			for _, l := range p.Layers {
				e.printf("  layer %s (%s)\n", l.Dir, l.For)
			}
			for _, w := range p.Writable {
				def := ""
				if w.Default {
					def = " (default)"
				}
				e.printf("  %s %s%s\n", w.Kind, w.Path, def)
			}
			e.printf("  everything else: volatile (RAM overlay over the read-only root)\n")
			for _, m := range p.Messages {
				e.printf("  note: %s\n", m)
			}
			return nil
		},
	}
	t.add(c)
	c.Flags().StringVar(&node, "node", "", "node name")
	c.Flags().StringVar(&class, "class", "", "class, instead of the one the class map gives (imprint.class=)")
	return c
}

func newIdentityCheck(e *env) *cobra.Command {
	var t treeFlags
	c := &cobra.Command{
		Use:   "check (--rootfs DIR | --image NAME --from STORE)",
		Short: "Check the image's identity configuration (" + "/" + identity.ConfigPath + ") against the image",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fsys, done, err := t.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			if err := identity.Check(fsys); err != nil {
				return err
			}
			e.printf("identity configuration ok\n")
			return nil
		},
	}
	t.add(c)
	return c
}
