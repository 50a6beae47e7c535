package cli

import (
	"errors"
	"fmt"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/ondisk"
	"github.com/imprint-dev/imprint/store"
	"github.com/spf13/cobra"
)

func newExport(e *env) *cobra.Command {
	var (
		disk, out, signKey string
		slot               string
		allowDrift         bool
		trust              []string
	)
	c := &cobra.Command{
		Use:   "export --disk PATH --out STORE",
		Short: "Turn a deployed disk into a store (a portable master), checking every chunk against the disk's own manifest",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := trustFlag(trust)
			if err != nil {
				return err
			}
			o := ondisk.ExportOptions{AllowDrift: allowDrift}
			if signKey != "" {
				if o.Signer, err = image.LoadSigner(signKey); err != nil {
					return fmt.Errorf("--sign: %w", err)
				}
			}
			src, err := ondisk.OpenDiskSlot(disk, slot)
			if err != nil {
				return err
			}
			defer src.Close()
			res := src.Resolved()
			if err := t.Check(res); err != nil {
				return fmt.Errorf("%s: %w; nothing exported", disk, err)
			}
			dst, err := store.CreateDir(out)
			if err != nil {
				return err
			}
			pr := newProgress(e)
			var done int64
			total := int64(0)
			for _, nc := range res.Manifest.Contents() {
				total += nc.Content.Size
			}
			o.Progress = func(n int64) {
				done += n
				pr.update("export", done, total)
			}
			r, err := ondisk.Export(cmd.Context(), src, dst, o)
			pr.finish()
			if err != nil {
				if errors.Is(err, ondisk.ErrDrifted) {
					return &exitError{code: 1, err: err}
				}
				return err
			}
			if e.json {
				e.emitJSON(r)
				return nil
			}
			if len(r.Drifted) > 0 {
				e.printf("exported the DRIFTED disk %s as %s:%s (image id %s); %d chunk(s) differ from the master %s:%s (id %s)\n",
					disk, r.Name, r.Version, r.ID, len(r.Drifted), res.Manifest.Name, res.Manifest.Version, r.MasterID)
			} else {
				e.printf("exported %s:%s from %s to %s\n  image id %s (the master's)\n", r.Name, r.Version, disk, out, r.ID)
			}
			e.printf("  %d chunks checked, %d new in the store (%s)\n", r.Chunks, r.New, layout.HumanSize(r.NewBytes))
			switch {
			case r.Signed && len(r.Drifted) > 0:
				e.printf("  signed with %s\n", signKey)
			case r.Signed:
				e.printf("  the master's signature is kept\n")
			default:
				e.printf("  unsigned\n")
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&disk, "disk", "", "deployed disk: block device or image file")
	f.StringVar(&slot, "slot", "", "export the image of root slot a or b (default: the active slot)")
	f.StringVar(&out, "out", "", "store directory to write (created if missing; chunks already there are reused)")
	f.BoolVar(&allowDrift, "allow-drift", false, "export a drifted disk as it is, as a new version <version>-drifted-<time>")
	f.StringVar(&signKey, "sign", "", "sign a drifted export with this minisign secret key")
	f.StringArrayVar(&trust, "trust", nil, "refuse the disk unless its image is signed by this minisign public key (repeatable)")
	for _, r := range []string{"disk", "out"} {
		_ = c.MarkFlagRequired(r)
	}
	return c
}
