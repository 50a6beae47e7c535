package cli

import (
	"github.com/imprint-dev/imprint/image"
	"github.com/spf13/cobra"
)

func newKey(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "key",
		Short: "Manage the minisign keys images are signed with",
	}
	var out string
	gen := &cobra.Command{
		Use:   "generate --out PREFIX",
		Short: "Make a key pair: PREFIX.key (secret, unencrypted, mode 0600) and PREFIX.pub",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, err := image.GenerateKey(out)
			if err != nil {
				return err
			}
			if e.json {
				e.emitJSON(map[string]any{"public_key": pub, "secret_key_file": out + image.PrivateKeySuffix, "public_key_file": out + image.PublicKeySuffix})
				return nil
			}
			e.printf("wrote %s%s (keep it secret) and %s%s\npublic key: %s\n", out, image.PrivateKeySuffix, out, image.PublicKeySuffix, pub)
			return nil
		},
	}
	gen.Flags().StringVar(&out, "out", "imprint", "path prefix of the two key files")
	c.AddCommand(gen)
	return c
}
