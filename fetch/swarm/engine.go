package swarm

import (
	"os"
	"sync"
	_ "unsafe" // go:linkname

	"github.com/anacrolix/torrent"

	"github.com/imprint-dev/imprint/image"
)

// webseedSlice is the engine's web seed request alignment
// (TORRENT_WEBSEED_REQUEST_CHUNK_SIZE, 64 MiB by default, sized for
// CloudFlare). A web seed request runs from the first block the node
// wants to the end of its slice, one request per slice at a time, and is
// cancelled as soon as the next 48 KiB hold no wanted block; the engine
// then counts the cancelled read as an error and sleeps up to 10 s before
// the next request. So a node lacking every other chunk took one piece
// per request, one request at a time, seconds apart (8 MiB of 64 KiB
// chunks: 4.6 min). Slices of the smallest chunk size (64 KiB, so every
// piece boundary is a slice boundary) make each request end where the
// wanted data ends, never cancelled, and let the engine run its 25
// requests per host at once.
//
// A linkname to a variable the engine no longer has still links (this
// package would define it): TestWebSeedScatteredPieces is what notices.
//
//go:linkname webseedSlice github.com/anacrolix/torrent.webseedRequestChunkSize
var webseedSlice uint64

// useSmallWebseedSlices sets webseedSlice, once per process, before the
// first node's client starts. It is the engine's package variable, so a
// process-wide setting whatever the number of nodes; set here rather than
// in an init so that only a binary that runs a node changes it. An
// operator's explicit setting wins.
func useSmallWebseedSlices() {
	webseedOnce.Do(func() {
		if os.Getenv("TORRENT_WEBSEED_REQUEST_CHUNK_SIZE") == "" {
			webseedSlice = image.MinChunkSize
		}
	})
}

// webseedOnce guards webseedSlice's one write: global because the
// variable it guards is.
var webseedOnce sync.Once

// The engine starts web seed requests only every 5 s
// (webseedRequestUpdateTimerInterval) or when one of them ends; nothing
// it exports makes it look sooner, so a node that joins waited up to 5 s
// (2.5 s on average) for its first web seed byte. kickWebSeeds has it
// look now, as its own timer would: under the client's lock.
//
//go:linkname clientLock github.com/anacrolix/torrent.(*Client).lock
func clientLock(*torrent.Client)

//go:linkname clientUnlock github.com/anacrolix/torrent.(*Client).unlock
func clientUnlock(*torrent.Client)

// The reason is the engine's updateRequestReason, a string.
//
//go:linkname updateWebseedRequests github.com/anacrolix/torrent.(*Client).updateWebseedRequestsWithReason
func updateWebseedRequests(*torrent.Client, string)

func kickWebSeeds(cl *torrent.Client) {
	clientLock(cl)
	defer clientUnlock(cl)
	updateWebseedRequests(cl, "imprint: joined")
}
