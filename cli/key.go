package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
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
	var key string
	sign := &cobra.Command{
		Use:   "sign --key KEY FILE...",
		Short: "Sign files imprint hands out beside images (a site's identity map for serve --identity): writes FILE.minisig",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			if key == "" {
				return fmt.Errorf("--key: give the secret key file (imprint key generate)")
			}
			s, err := image.LoadSigner(key)
			if err != nil {
				return fmt.Errorf("--key: %w", err)
			}
			for _, f := range files {
				raw, err := os.ReadFile(f)
				if err != nil {
					return err
				}
				sig := s.SignFile(raw, filepath.Base(f))
				if err := renameio.WriteFile(f+image.SignatureSuffix, sig, 0o644); err != nil {
					return err
				}
				e.printf("wrote %s%s\n", f, image.SignatureSuffix)
			}
			return nil
		},
	}
	sign.Flags().StringVar(&key, "key", "", "secret key file (PREFIX.key of imprint key generate)")
	c.AddCommand(sign)
	return c
}
