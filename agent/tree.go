package agent

import (
	"errors"
	"fmt"

	"github.com/imprint-dev/imprint/builder"
)

// ErrNoTreeAgent says a root tree gives no agent initramfs: it has no
// kernel, or no modules for it.
var ErrNoTreeAgent = errors.New("no agent initramfs for this tree")

// BuildForTree makes the agent initramfs for the kernel of a root tree
// from the tree's own /lib/modules/RELEASE (what imprint initrd does), so
// an image carries the agent its kernel can load. self is the static
// imprint binary that becomes /init.
func BuildForTree(root, self string, trust []string) ([]byte, string, error) {
	k, err := builder.FindKernel(root)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrNoTreeAgent, err)
	}
	dir, release := builder.TreeModules(root, k)
	if dir == "" {
		return nil, "", fmt.Errorf("%w: %s has no /lib/modules/RELEASE for %s", ErrNoTreeAgent, root, k.Kernel)
	}
	b, _, err := BuildInitrd(InitrdOptions{Self: self, ModulesDir: dir, Release: release, Trust: trust})
	if err != nil {
		return nil, "", fmt.Errorf("agent initramfs from %s: %w", dir, err)
	}
	return b, release, nil
}
