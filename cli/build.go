package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/imprint-dev/imprint/agent"
	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/builder"
	"github.com/imprint-dev/imprint/identity"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
	"github.com/spf13/cobra"
)

func newBuild(e *env) *cobra.Command {
	var (
		o          builder.Options
		storeDir   string
		parts      []string
		layoutFile string
		rootSize   string
		chunkSize  string
		pieceSize  string
		signKey    string
		loaders    []string
		noAgent    bool
		agentSelf  string
	)
	c := &cobra.Command{
		Use:   "build --store DIR --name NAME (--rootfs DIR | --partition NAME=FILE... | --disk-image FILE)",
		Short: "Make an image in a store from a root tree, partition images or a whole-disk image",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if signKey != "" {
				if o.Signer, err = image.LoadSigner(signKey); err != nil {
					return fmt.Errorf("--sign: %w", err)
				}
			}
			o.Store, err = store.CreateDir(storeDir)
			if err != nil {
				return err
			}
			for _, p := range parts {
				name, file, ok := strings.Cut(p, "=")
				if !ok || name == "" || file == "" {
					return fmt.Errorf("--partition %q: want NAME=FILE", p)
				}
				o.Partitions = append(o.Partitions, builder.PartitionFile{Name: name, Path: file})
			}
			for _, l := range loaders {
				name, file, ok := strings.Cut(l, "=")
				if !ok || name == "" || file == "" {
					return fmt.Errorf("--loader %q: want NAME=FILE, NAME one of %s", l, strings.Join(bootloader.LoaderNames(), ", "))
				}
				if o.Loaders == nil {
					o.Loaders = map[string]string{}
				}
				if _, dup := o.Loaders[name]; dup {
					return fmt.Errorf("--loader %s is given twice", name)
				}
				o.Loaders[name] = file
			}
			if layoutFile != "" {
				f, err := os.Open(layoutFile)
				if err != nil {
					return err
				}
				l, err := layout.ParseLayout(f)
				f.Close()
				if err != nil {
					return fmt.Errorf("--layout %s: %w", layoutFile, err)
				}
				o.Layout = &l
			}
			if rootSize != "" {
				if o.RootSize, err = layout.ParseSize(rootSize); err != nil {
					return fmt.Errorf("--root-size: %w", err)
				}
			}
			if chunkSize != "" {
				if o.ChunkSize, err = layout.ParseSize(chunkSize); err != nil {
					return fmt.Errorf("--chunk-size: %w", err)
				}
			}
			if pieceSize != "" {
				if o.PieceSize, err = parsePieceSize(pieceSize); err != nil {
					return err
				}
			}
			if o.Rootfs != "" {
				// Before the slow filesystem build: a bad identity
				// configuration is the tree's fault, not the boot's.
				if st, err := os.Stat(o.Rootfs); err == nil && st.IsDir() {
					if err := identity.Check(os.DirFS(o.Rootfs)); err != nil {
						return fmt.Errorf("--rootfs %s: %w (imprint identity check --rootfs %s)", o.Rootfs, err, o.Rootfs)
					}
				}
			}
			if noAgent && o.Agent != "" {
				return fmt.Errorf("--agent and --no-agent contradict each other")
			}
			if o.Rootfs != "" && o.Agent == "" && !noAgent && !o.NoKernel {
				// Every image built from a tree carries its agent, made
				// from the tree's own kernel modules.
				if agentSelf == "" {
					if agentSelf, err = os.Executable(); err != nil {
						return err
					}
				}
				b, release, err := agent.BuildForTree(o.Rootfs, agentSelf, nil)
				switch {
				case errors.Is(err, agent.ErrNoTreeAgent):
					fmt.Fprintf(e.io.Err, "note: the image carries no agent (local identity, diskless and install boots need one): %v; give --agent FILE (imprint initrd) or --no-agent\n", err)
				case err != nil:
					return fmt.Errorf("the image's agent: %w (give --agent FILE, --agent-imprint STATIC-IMPRINT or --no-agent)", err)
				default:
					tmp, err := os.CreateTemp(o.TmpDir, "imprint-agent-*.img")
					if err != nil {
						return err
					}
					defer os.Remove(tmp.Name())
					_, err = tmp.Write(b)
					if cerr := tmp.Close(); err == nil {
						err = cerr
					}
					if err != nil {
						return err
					}
					o.Agent = tmp.Name()
					if !e.json {
						e.printf("agent initramfs made from the tree's /lib/modules/%s (%d bytes)\n", release, len(b))
					}
				}
			}
			pr := newProgress(e)
			o.Progress = pr.update
			res, err := builder.Build(cmd.Context(), o)
			pr.finish()
			if err != nil {
				return err
			}
			m := res.Manifest
			for _, n := range res.Notes {
				fmt.Fprintf(e.io.Err, "note: %s\n", n)
			}
			if e.json {
				e.emitJSON(map[string]any{"id": res.ID, "name": m.Name, "version": m.Version, "chunks": res.Stats.Chunks, "zero_chunks": res.Stats.Zero, "new_chunks": res.Stats.New, "new_bytes": res.Stats.NewBytes, "signed": res.Signed, "base": res.Base,
					"kernel": res.Boot.Kernel, "initrd": res.Boot.Initrd, "cmdline": res.Boot.Cmdline, "cmdline_from": res.Boot.CmdlineFrom, "notes": res.Notes})
				return nil
			}
			e.printf("built %s:%s\n  image id %s\n  %d chunks: %d new, %d all-zero, %d already in the store\n",
				m.Name, m.Version, res.ID, res.Stats.Chunks, res.Stats.New, res.Stats.Zero, res.Stats.Chunks-res.Stats.New-res.Stats.Zero)
			if res.Base != nil {
				e.printf("  root filesystem updated from %s:%s (not reproducible from the tree alone)\n", res.Base.Name, res.Base.Version)
			}
			if b := res.Boot; b.Kernel != "" {
				where := ""
				if o.Kernel == "" && o.Rootfs != "" {
					where = " (in " + o.Rootfs + ")"
				}
				e.printf("  kernel  %s%s\n", b.Kernel, where)
				if b.Initrd == "" {
					b.Initrd = "none"
				}
				e.printf("  initrd  %s\n  cmdline %q (%s)\n", b.Initrd, b.Cmdline, b.CmdlineFrom)
			} else if o.Rootfs != "" {
				e.printf("  no kernel (--no-kernel)\n")
			}
			if res.Signed {
				e.printf("  signed with %s (images/%s/%s/manifest.json%s)\n", signKey, m.Name, m.Version, image.SignatureSuffix)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&storeDir, "store", "", "store directory (created if missing)")
	f.StringVar(&signKey, "sign", "", "sign the manifest with this minisign secret key (imprint key generate)")
	f.StringVar(&o.Name, "name", "", "image name")
	f.StringArrayVar(&loaders, "loader", nil, "boot loader binary NAME=FILE the image carries instead of the build host's ("+strings.Join(bootloader.LoaderNames(), ", ")+"); repeatable")
	f.StringVar(&o.LoaderRoot, "loader-root", "/", "root of the Debian packages (systemd-boot-efi, ipxe, grub-efi-amd64-bin, grub-pc-bin) the image's boot loaders come from")
	f.StringVar(&o.Version, "version", "", "image version (default: creation date and time, and content hash: 20240601.153000-1a2b3c4d)")
	f.StringVar(&o.Rootfs, "rootfs", "", "root filesystem directory, made into a reproducible ext4 image")
	f.StringVar(&o.Base, "base", "", "build the --rootfs image on this earlier version NAME:VERSION (or NAME: the newest) in the store: its filesystem updated in place (needs root, rsync), so few chunks change and syncs stay small; not reproducible from the tree alone")
	f.StringVar(&rootSize, "root-size", "", "size of the root filesystem (default: estimated from the tree)")
	f.StringArrayVar(&parts, "partition", nil, "raw partition image NAME=FILE (repeatable)")
	f.StringVar(&o.DiskImage, "disk-image", "", "whole GPT disk image (.img, .img.zst, .img.xz, .img.gz)")
	f.StringVar(&o.Bmap, "bmap", "", "bmaptool map of --disk-image: only mapped ranges are read")
	f.StringVar(&layoutFile, "layout", "", "layout file (imprint format or sfdisk --dump output)")
	f.StringVar(&o.Kernel, "kernel", "", "kernel (default: found in --rootfs: the newest /boot/vmlinuz-*, /usr/lib/modules/*/vmlinuz, /boot/vmlinuz, /vmlinuz or unified kernel image)")
	f.StringVar(&o.Initrd, "initrd", "", "initrd (default: the one that goes with the kernel found in --rootfs)")
	f.StringVar(&o.Cmdline, "cmdline", "", "kernel command line of the image (default: a unified kernel image's, else \"ro\" when there is a kernel)")
	f.BoolVar(&o.NoKernel, "no-kernel", false, "the --rootfs image carries no kernel (else a tree without one is an error)")
	f.StringVar(&o.Agent, "agent", "", "agent initramfs (from imprint initrd) for local, diskless and install boots (default with --rootfs: made from the tree's /lib/modules/RELEASE)")
	f.BoolVar(&noAgent, "no-agent", false, "with --rootfs: the image carries no agent (its local entry boots with the image's own initrd)")
	f.StringVar(&agentSelf, "agent-imprint", "", "static imprint binary that becomes the agent's /init (default: this one)")
	f.StringVar(&pieceSize, "piece-size", "", fmt.Sprintf("the swarm's piece length, a power of two from 16K below the chunk size, or 0 for pieces that are chunks (default %dK when the chunks are larger); raised for an image that would have more than %d pieces", image.DefaultPieceLength>>10, image.MaxSwarmPieces))
	f.StringVar(&chunkSize, "chunk-size", "", fmt.Sprintf("chunk size, a power of two from 64K to 64M (default %dM)", image.DefaultChunkSize>>20))
	_ = c.MarkFlagRequired("store")
	_ = c.MarkFlagRequired("name")
	return c
}

// parsePieceSize reads --piece-size: "0" is pieces that are chunks (-1
// to the builder, whose 0 is the default).
func parsePieceSize(s string) (int64, error) {
	if strings.TrimSpace(s) == "0" {
		return -1, nil
	}
	n, err := layout.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("--piece-size: %w", err)
	}
	return n, nil
}
