package cli

import (
	"time"

	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
	"github.com/spf13/cobra"
)

func newPrune(e *env) *cobra.Command {
	var (
		dir string
		o   store.PruneOptions
	)
	c := &cobra.Command{
		Use:   "prune --store DIR --keep N",
		Short: "Drop all but the newest N versions of each image in a store, and the chunks nothing references any more",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := store.OpenDir(dir)
			if err != nil {
				return err
			}
			res, err := st.Prune(cmd.Context(), o)
			if err != nil {
				return err
			}
			if e.json {
				e.emitJSON(res)
				return nil
			}
			verb := "dropped"
			if o.DryRun {
				verb = "would drop"
			}
			e.printf("%s %d versions and %d chunks (%s as stored); %d chunks stay\n", verb, len(res.Versions), res.Chunks, layout.HumanSize(res.Bytes), res.KeptChunks)
			for _, v := range res.Versions {
				e.printf("  %s\n", v)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&dir, "store", "", "store directory")
	f.IntVar(&o.Keep, "keep", 0, "versions of each image to keep, the newest")
	f.DurationVar(&o.Grace, "grace", time.Hour, "keep unreferenced chunks younger than this (a build may be storing them)")
	f.BoolVar(&o.DryRun, "dry-run", false, "say what would go; remove nothing")
	_ = c.MarkFlagRequired("store")
	_ = c.MarkFlagRequired("keep")
	return c
}
