package copier

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
)

// TestAPeerThatIsNeverReadyDoesNotStallTheCopy: a two-chunk content from
// [a peer that answers 425 Too Early forever, a good store] with the
// default fetch options, as deploy --from PEER --from MASTER does. It took
// two minutes when each chunk waited for the peer.
func TestAPeerThatIsNeverReadyDoesNotStallTheCopy(t *testing.T) {
	st, _ := store.CreateDir(t.TempDir())
	data := make([]byte, 2*cs)
	rand.Read(data)
	c, _, err := image.StoreContent(context.Background(), st, bytes.NewReader(data), int64(len(data)), cs, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTooEarly) }))
	defer srv.Close()
	peer, _ := store.OpenHTTP(srv.URL)
	dec, _ := image.NewDecoder()
	defer dec.Close()
	cp := &Copier{Sources: []store.Source{peer, st}, Dec: dec, ChunkSize: cs}
	begin := time.Now()
	b, err := cp.ReadContent(context.Background(), c)
	el := time.Since(begin)
	t.Logf("stalled peer + good master, 2 chunks: %v", el)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, data) {
		t.Fatal("the content differs")
	}
	if el > 5*time.Second {
		t.Errorf("took %v", el)
	}
	if from := cp.BytesFrom(); from[0] != 0 || from[1] != int64(len(data)) {
		t.Errorf("bytes per source %v", from)
	}
}
