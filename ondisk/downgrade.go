package ondisk

import (
	"errors"
	"fmt"

	"github.com/imprint-dev/imprint/image"
)

// ErrDowngrade says an image would replace a newer version of itself on a
// disk.
var ErrDowngrade = errors.New("refusing to replace a newer version with an older one")

// CheckDowngrade is the one rule for replacing what a disk holds (deploy,
// sync): next may not replace current, a newer version of the same image
// (image.Later: the version order the boot loaders sort entries by), unless allow.
// Another image, the same version, or no current image is no downgrade.
func CheckDowngrade(current, next *image.Manifest, allow bool) error {
	if current == nil || next == nil || current.Name != next.Name || current.Version == next.Version {
		return nil
	}
	if !image.Later(current.Created, current.Version, next.Created, next.Version) || allow {
		return nil
	}
	return fmt.Errorf("%w: the disk holds %s:%s (created %s), newer than %s:%s (created %s); name the version you want, or give --allow-downgrade",
		ErrDowngrade, current.Name, current.Version, current.Created.Format("2006-01-02T15:04:05Z"),
		next.Name, next.Version, next.Created.Format("2006-01-02T15:04:05Z"))
}
