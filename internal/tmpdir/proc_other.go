//go:build !linux

package tmpdir

import "os"

// Elsewhere nothing is proven stale, so nothing is swept.
func hold(*os.File) error   { return nil }
func locked(string) bool    { return true }
func alive(int) bool        { return true }
func ownedByUs(string) bool { return false }
