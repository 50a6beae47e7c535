package cli

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress shows how far a long step is: a bar with throughput and ETA on a
// terminal, a plain line every few seconds otherwise, nothing with --json
// (events carry the numbers there).
type progress struct {
	e     *env
	mu    sync.Mutex
	label string
	bar   *progressbar.ProgressBar
	last  time.Time
	start time.Time
}

func newProgress(e *env) *progress { return &progress{e: e} }

func (p *progress) update(label string, done, total int64) {
	if p.e.json {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if label != p.label {
		p.finishLocked()
		p.label, p.start, p.last = label, time.Now(), time.Now()
		if p.e.isTerminal() {
			p.bar = progressbar.NewOptions64(total,
				progressbar.OptionSetWriter(p.e.io.Err),
				progressbar.OptionSetDescription(label),
				progressbar.OptionShowBytes(true),
				progressbar.OptionShowTotalBytes(true),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionFullWidth(),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.e.io.Err) }),
			)
		}
	}
	if p.bar != nil {
		_ = p.bar.Set64(done)
		return
	}
	if time.Since(p.last) >= 2*time.Second || done == total {
		p.last = time.Now()
		el := time.Since(p.start).Seconds()
		rate := 0.0
		if el > 0 {
			rate = float64(done) / el / 1e6
		}
		pct := 100.0
		if total > 0 {
			pct = float64(done) * 100 / float64(total)
		}
		fmt.Fprintf(p.e.io.Err, "%s: %5.1f%% %d/%d bytes %.1f MB/s\n", label, pct, done, total, rate)
	}
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finishLocked()
}

func (p *progress) finishLocked() {
	if p.bar != nil {
		_ = p.bar.Finish()
		p.bar = nil
	}
	p.label = ""
}

// emitJSON writes one JSON object on its own line.
func (e *env) emitJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"event": "error", "message": err.Error()})
	}
	fmt.Fprintf(e.io.Out, "%s\n", b)
}
