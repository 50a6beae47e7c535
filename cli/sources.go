package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/ondisk"
	"github.com/imprint-dev/imprint/store"
)

// openSource opens what --from names: a store directory, an http(s) store
// (a master, a mirror or a peer's imprint serve), or a deployed disk (a
// block device or disk image file) read directly.
func openSource(s string) (store.Source, func(), error) {
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		h, err := store.OpenHTTP(s)
		return h, func() {}, err
	}
	st, err := os.Stat(s)
	if err != nil {
		return nil, nil, err
	}
	if st.IsDir() {
		d, err := store.OpenDir(s)
		return d, func() {}, err
	}
	d, err := ondisk.OpenDiskSource(s)
	if err != nil {
		return nil, nil, fmt.Errorf("%s is neither a store directory nor a deployed disk: %w", s, err)
	}
	return d, func() { d.Close() }, nil
}

// trustFlag turns --trust values into a key set.
func trustFlag(keys []string) (*image.Trust, error) {
	t, err := image.ParseTrust(keys)
	if err != nil {
		return nil, fmt.Errorf("--trust: %w", err)
	}
	return t, nil
}

// trustKeyText gives --trust keys as comma-separated key text, the form
// the agent takes on the kernel command line (imprint.trust=).
func trustKeyText(specs []string) (string, error) {
	var keys []string
	for _, s := range specs {
		k, err := image.PublicKeyText(s)
		if err != nil {
			return "", fmt.Errorf("--trust: %w", err)
		}
		keys = append(keys, k)
	}
	return strings.Join(keys, ","), nil
}
