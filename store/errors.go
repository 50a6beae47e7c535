// Package store holds the sources of manifests and chunks: a store
// directory and the HTTP client of a served store. A source only fetches
// (and a directory stores); which source to ask is decided above it.
package store

import "errors"

// Sentinel errors callers act on.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists with other content")
	// ErrNotYet says a source will have a chunk but does not yet: a peer
	// that is still deploying it. Clients wait a while, then ask elsewhere.
	ErrNotYet = errors.New("not there yet")
	// ErrBadChunk says a stored chunk file is not one: not a regular
	// file, or larger than any chunk the format allows.
	ErrBadChunk = errors.New("bad chunk file")
	// ErrNoProgress says a server stopped sending a response: no byte for
	// the source's stall time. A slow body is not one.
	ErrNoProgress = errors.New("no progress")
	// ErrNoRange says a server refused a Range request for good (400,
	// 401, 403, 405, 416, 501): it serves no web seed a client can read
	// pieces from.
	ErrNoRange = errors.New("no range support")
	// ErrRangeIgnored says a server answered a Range request with
	// something other than the range asked for (a 200 with the whole
	// file, another range, another length). Not for good: a caching proxy
	// answers its own first miss with a 200 and later ones with a 206.
	ErrRangeIgnored = errors.New("range ignored")
)
