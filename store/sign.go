package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"aead.dev/minisign"
	"github.com/google/renameio/v2"
	"github.com/imprint-dev/imprint/image"
)

// fetchSignature asks a source for a manifest's signature; an unsigned
// image gives nil, not an error.
func fetchSignature(ctx context.Context, src Source, name, version string) ([]byte, error) {
	sig, err := src.Signature(ctx, name, version)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return sig, err
}

func (d *Dir) signaturePath(name, version string) string {
	return d.manifestPath(name, version) + image.SignatureSuffix
}

// Signature implements Source.
func (d *Dir) Signature(ctx context.Context, name, version string) ([]byte, error) {
	if image.ValidName(name) != nil || image.ValidName(version) != nil {
		return nil, fmt.Errorf("image %s:%s: %w", name, version, ErrNotFound)
	}
	b, err := os.ReadFile(d.signaturePath(name, version))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("signature of %s:%s: %w", name, version, ErrNotFound)
	}
	return b, err
}

// PutSignature stores the signature of a version already in the store. It
// checks that the signature is at least well-formed; whether its key is
// trusted is for readers to decide.
func (d *Dir) PutSignature(name, version string, sig []byte) error {
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		return fmt.Errorf("signature of %s:%s is malformed: %w", name, version, err)
	}
	if _, err := d.Manifest(context.Background(), name, version); err != nil {
		return err
	}
	return renameio.WriteFile(d.signaturePath(name, version), sig, 0o644)
}

// Signature implements Source.
func (h *HTTP) Signature(ctx context.Context, name, version string) ([]byte, error) {
	if image.ValidName(name) != nil || image.ValidName(version) != nil {
		return nil, fmt.Errorf("image %s:%s: %w", name, version, ErrNotFound)
	}
	return h.get(ctx, "images/"+name+"/"+version+"/manifest.json"+image.SignatureSuffix, 64<<10)
}
