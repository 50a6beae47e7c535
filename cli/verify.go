package cli

import (
	"errors"
	"fmt"

	"github.com/imprint-dev/imprint/ondisk"
	"github.com/spf13/cobra"
)

func newVerify(e *env) *cobra.Command {
	var (
		disk, slot string
		all, full  bool
	)
	c := &cobra.Command{
		Use:   "verify --disk PATH [--slot a|b | --all] [--full]",
		Short: "Read a deployed disk back and compare it with its image (exit 0 identical, 1 drifted, 2 error, 3 incomplete)",
		Long: `Read a deployed disk back and compare every image partition with the manifest
recorded on it.

On a disk with two root slots it reads the active slot (the ESP's loaders and
menu with it); --slot reads another, --all both (the worst verdict sets the
exit code; a slot never written is skipped).

Every chunk is checked: data chunks by their SHA-256, zero chunks by reading
as zeros; together they cover each partition exactly. --full also hashes
each whole partition and compares it with the manifest's content sha256,
which proves the manifest consistent too (it reads and hashes the zero
chunks as well, so it takes longer).

Exit codes:
  0  identical: the deploy finished and every chunk matches
  1  drifted: the deploy finished, and the disk no longer matches its image
  2  error: the disk could not be read, or is not a deployed disk
  3  incomplete: the deploy onto the disk never finished (it was killed or
     lost power); run the same deploy again to resume it`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &exitError{code: 2, err: fmt.Errorf("verify takes no arguments; use --disk PATH")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if disk == "" {
				return &exitError{code: 2, err: fmt.Errorf("verify: --disk is required")}
			}
			if all && slot != "" {
				return &exitError{code: 2, err: fmt.Errorf("verify: --all reads every slot; it does not combine with --slot")}
			}
			slots := []string{slot}
			if all {
				others, err := ondisk.OtherSlots(disk)
				if err != nil {
					return &exitError{code: 2, err: fmt.Errorf("verify: %w", err)}
				}
				slots = append(slots, others...)
			}
			var worst error
			for _, sl := range slots {
				err := verifyOne(cmd, e, disk, sl, full)
				if rank(err) > rank(worst) {
					worst = err
				}
			}
			err := worst
			switch {
			case err == nil:
				return nil
			case errors.Is(err, ondisk.ErrIncomplete):
				return &exitError{code: 3, err: err}
			case errors.Is(err, ondisk.ErrDrifted):
				return &exitError{code: 1, err: err}
			default:
				return &exitError{code: 2, err: fmt.Errorf("verify: %w", err)}
			}
		},
	}
	c.Flags().StringVar(&disk, "disk", "", "deployed block device or image file")
	c.Flags().StringVar(&slot, "slot", "", "root slot to read, a or b (default: the active one)")
	c.Flags().BoolVar(&all, "all", false, "read every written root slot, the inactive one too")
	c.Flags().BoolVar(&full, "full", false, "also hash each whole partition against the manifest's content sha256")
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: 2, err: err} })
	return c
}

// verifyOne verifies one slot of disk and prints its report.
func verifyOne(cmd *cobra.Command, e *env, disk, slot string, full bool) error {
	pr := newProgress(e)
	rep, err := ondisk.VerifySlotWith(cmd.Context(), disk, slot, ondisk.VerifyOptions{Full: full, Progress: func(part string, done, total int64) {
		pr.update("verify "+part, done, total)
	}})
	pr.finish()
	if rep != nil {
		if e.json {
			e.emitJSON(rep)
		} else {
			where := ""
			if rep.Slot != "" {
				where = " in slot " + rep.Slot
				if rep.Active {
					where += " (active)"
				}
			}
			e.printf("%s holds %s%s (image id %s), deploy %s\n", rep.Disk, rep.Image, where, rep.ImageID, rep.Status)
			incomplete := errors.Is(err, ondisk.ErrIncomplete)
			for _, p := range rep.Partitions {
				status, differ := p.Status, "drifted"
				if incomplete && status == "drifted" {
					// Most likely not written yet, not changed since.
					status, differ = "incomplete", "not as in the image yet"
				}
				e.printf("  %-12s %-10s %d chunks, %d %s", p.Name, status, p.Chunks, len(p.Drifted), differ)
				if p.Problem != "" {
					e.printf(": %s", p.Problem)
				}
				for i, d := range p.Drifted {
					if i == 5 {
						e.printf(" ...")
						break
					}
					e.printf(" [chunk %d at byte %d]", d.Index, d.Offset)
				}
				e.printf("\n")
			}
			if len(rep.Files) > 0 {
				n := map[string]int{}
				for _, f := range rep.Files {
					n[f.Status]++
				}
				e.printf("  %-12s %d files: %d identical, %d changing files valid, %d drifted, %d missing\n", "ESP", len(rep.Files), n["identical"], n["valid"], n["drifted"], n["missing"])
				for _, f := range rep.Files {
					if f.Status == "drifted" || f.Status == "missing" {
						e.printf("    %s (%s) %s: %s\n", f.Path, f.Of, f.Status, f.Problem)
					}
				}
			}
			switch {
			case incomplete:
				e.printf("incomplete: the deploy did not finish; run it again to resume\n")
			case rep.Identical:
				e.printf("identical\n")
			default:
				e.printf("DRIFTED\n")
			}
		}
	}
	return err
}

// rank orders verify outcomes by exit code: error > incomplete > drifted > identical.
func rank(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ondisk.ErrDrifted):
		return 1
	case errors.Is(err, ondisk.ErrIncomplete):
		return 2
	}
	return 3
}
