package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

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
	var key, valid string
	var allowOlder bool
	sign := &cobra.Command{
		Use:   "sign --key KEY FILE...",
		Short: "Sign files imprint hands out beside images (a site's identity map for serve --identity): writes FILE.minisig, with the time of signing",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			if key == "" {
				return fmt.Errorf("--key: give the secret key file (imprint key generate)")
			}
			s, err := image.LoadSigner(key)
			if err != nil {
				return fmt.Errorf("--key: %w", err)
			}
			var until time.Time
			if valid != "" {
				if until, err = parseValid(valid, time.Now()); err != nil {
					return err
				}
			}
			for _, f := range files {
				raw, err := os.ReadFile(f)
				if err != nil {
					return err
				}
				// The signing time goes into the signature: a node with a
				// state partition refuses a map signed before the newest
				// it took.
				signed := time.Now().UTC().Truncate(time.Second)
				if err := checkSignedBefore(f+image.SignatureSuffix, signed, allowOlder); err != nil {
					return err
				}
				sig := s.SignFileAt(raw, filepath.Base(f), image.FileStamps{Signed: signed, Until: until})
				if err := renameio.WriteFile(f+image.SignatureSuffix, sig, 0o644); err != nil {
					return err
				}
				e.printf("wrote %s%s (signed %s)\n", f, image.SignatureSuffix, signed.Format(time.RFC3339))
			}
			return nil
		},
	}
	sign.Flags().StringVar(&key, "key", "", "secret key file (PREFIX.key of imprint key generate)")
	sign.Flags().StringVar(&valid, "valid", "", "end of the signature's validity, signed with it: a duration from now (720h, 30d) or a time (2027-01-31T00:00:00Z); agents and serve refuse the file after it, so an old map cannot be handed out again for ever (default: no end)")
	sign.Flags().BoolVar(&allowOlder, "allow-older", false, "sign even when FILE.minisig says it was signed later than this machine's clock (nodes that took that map refuse the new one: docs/identity.md)")
	c.AddCommand(sign)
	return c
}

// checkSignedBefore refuses to sign a file over a signature of imprint's
// signed later than now: nodes that took that file refuse one signed
// before it (a replay, to them), so signing on a host whose clock is
// behind (or after one whose clock was ahead) would hand out a map no
// such node takes. A signature without the stamp, or unreadable, is
// simply replaced.
func checkSignedBefore(sigFile string, now time.Time, allow bool) error {
	b, err := os.ReadFile(sigFile)
	if err != nil {
		return nil
	}
	st, err := image.ReadFileStamps(b)
	if err != nil || !st.Signed.After(now) {
		return nil
	}
	if allow {
		return nil
	}
	return fmt.Errorf("%s was signed %s, later than this machine's clock says now (%s): nodes that took that map would refuse this one as older. "+
		"Check this clock; if the earlier signing host's clock was ahead, sign with --allow-older and clear the nodes' memory of it (docs/identity.md)",
		sigFile, st.Signed.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
}

// parseValid reads key sign --valid: a duration from now (Go's units, or
// whole days as "30d") or an RFC 3339 time, which must be later than now.
func parseValid(s string, now time.Time) (time.Time, error) {
	var until time.Time
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		until = t
	} else if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n <= 0 || n > 36500 {
			return time.Time{}, fmt.Errorf("--valid %q: not a number of days (1-36500)", s)
		}
		until = now.AddDate(0, 0, n)
	} else {
		d, err := time.ParseDuration(s)
		if err != nil {
			return time.Time{}, fmt.Errorf("--valid %q: not a duration (720h, 30d) or a time (2027-01-31T00:00:00Z)", s)
		}
		until = now.Add(d)
	}
	if !until.After(now) {
		return time.Time{}, fmt.Errorf("--valid %q: %s is not in the future", s, until.UTC().Format(time.RFC3339))
	}
	return until, nil
}
