package store

import (
	"context"
	"fmt"
	"sync/atomic"
)

// Switch is a Source whose backing source is replaced while it is in use:
// a deploy that serves its disk hands over from the source of the disk
// being written to the source of the completed disk.
type Switch struct {
	cur atomic.Pointer[sourceBox]
}

type sourceBox struct{ Source }

// Set makes src the source from now on.
func (s *Switch) Set(src Source) { s.cur.Store(&sourceBox{src}) }

func (s *Switch) get() (Source, error) {
	b := s.cur.Load()
	if b == nil {
		return nil, fmt.Errorf("the disk is not partitioned yet: %w", ErrNotYet)
	}
	return b.Source, nil
}

// Index implements Source.
func (s *Switch) Index(ctx context.Context) (*Index, error) {
	src, err := s.get()
	if err != nil {
		return nil, err
	}
	return src.Index(ctx)
}

// Manifest implements Source.
func (s *Switch) Manifest(ctx context.Context, name, version string) ([]byte, error) {
	src, err := s.get()
	if err != nil {
		return nil, err
	}
	return src.Manifest(ctx, name, version)
}

// Chunk implements Source.
func (s *Switch) Chunk(ctx context.Context, sum string) ([]byte, error) {
	src, err := s.get()
	if err != nil {
		return nil, err
	}
	return src.Chunk(ctx, sum)
}

// Signature implements Source.
func (s *Switch) Signature(ctx context.Context, name, version string) ([]byte, error) {
	src, err := s.get()
	if err != nil {
		return nil, err
	}
	return src.Signature(ctx, name, version)
}
