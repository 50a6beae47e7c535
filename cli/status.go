package cli

import (
	"fmt"
	"net/http"
	"time"

	"github.com/imprint-dev/imprint/netboot"
	"github.com/spf13/cobra"
)

func newStatus(e *env) *cobra.Command {
	var (
		server  string
		timeout time.Duration
	)
	c := &cobra.Command{
		Use:   "status --server URL",
		Short: "Show the machines an `imprint serve` sees fetching or serving each image (its /status.json)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if server == "" {
				return fmt.Errorf("give --server URL, e.g. --server http://10.0.0.1:8080/")
			}
			st, err := netboot.FetchStatus(cmd.Context(), &http.Client{Timeout: timeout}, server)
			if err != nil {
				return err
			}
			if e.json {
				e.emitJSON(st)
				return nil
			}
			return netboot.WriteStatus(e.io.Out, st)
		},
	}
	f := c.Flags()
	f.StringVar(&server, "server", "", "base URL of the `imprint serve`, e.g. http://10.0.0.1:8080/")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "give up on the server after this long")
	return c
}
