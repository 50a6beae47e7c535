package swarm

import (
	"os"

	"github.com/anacrolix/torrent"
	_ "unsafe" // go:linkname
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

// minChunkSize is the smallest chunk size an image may have.
const minChunkSize = 64 << 10

func init() {
	// An operator's explicit setting wins.
	if os.Getenv("TORRENT_WEBSEED_REQUEST_CHUNK_SIZE") == "" {
		webseedSlice = minChunkSize
	}
}

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
