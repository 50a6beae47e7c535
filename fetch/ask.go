package fetch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/imprint-dev/imprint/store"
)

// slot is one source's state for one item.
type slot struct {
	st     state
	at     time.Time     // when a waiting source is asked again
	notYet bool          // waiting on "not yet" (a poll), not after a failure
	pause  time.Duration // next poll pause
	tries  int           // failed requests
	again  int           // transient failures forgiven (see Options.Transient)
	probe  bool          // the request in flight probes a down source
	since  time.Time     // when the request in flight was made
	buf    bool          // the request in flight reads into the caller's buffer
	last   error
}

type state int

const (
	idle   state = iota // not asked yet
	flight              // a request is running
	wait                // asked again at .at
	out                 // done with: not found, bad bytes, stalled, out of tries
)

type result[T any] struct {
	i   int
	v   T
	err error
}

// ask gets one item from the sources. The rule: keep at least one
// source "hopeful" (a request in flight to a source that is not lagging,
// or a poll of a lagging source that still makes progress), asking idle
// sources that are up in order of preference; when none is left, down
// sources, then retries after failures, are the last resort. "Not yet"
// answers are polled until the source stalls. The item is counted (size
// bytes) for the source whose answer accept takes.
func ask[T any](ctx context.Context, f *Fetcher, what string, size int64,
	get func(ctx context.Context, src store.Source, useBuf bool) (T, error),
	accept func(i int, v T) error) (int, error) {
	n := len(f.peers)
	if n == 0 {
		return -1, fmt.Errorf("%s: no source to fetch it from", what)
	}
	o := f.opt
	ctx, cancel := context.WithCancel(ctx)
	results := make(chan result[T], n) // one request per source at most
	slots := make([]slot, n)
	inflight := 0
	bufBusy := false
	defer func() {
		// Requests still running are cancelled and waited for: one may be
		// reading into the caller's buffer.
		cancel()
		for ; inflight > 0; inflight-- {
			r := <-results
			f.mu.Lock()
			quiet := f.quiet(f.peers[r.i], slots[r.i].since, time.Now())
			f.mu.Unlock()
			f.settle(r.i, what, slots[r.i].probe, quiet, slots[r.i].since, r.err)
		}
	}()
	// launch is called with f.mu held.
	launch := func(i int, now time.Time) {
		s, p := &slots[i], f.peers[i]
		s.st, s.buf, s.since = flight, !bufBusy, now
		bufBusy = bufBusy || s.buf
		if p.asked.IsZero() {
			p.asked = now
		}
		inflight++
		go func() {
			v, err := get(ctx, p.src, s.buf)
			results <- result[T]{i, v, err}
		}()
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		f.mu.Lock()
		now := time.Now()
		hopeful := false
		for i := range slots {
			s, p := &slots[i], f.peers[i]
			if s.st == wait && s.notYet && !s.at.After(now) {
				launch(i, now)
			}
			switch {
			case s.st == flight && f.hopeful(s, p, now):
				hopeful = true
			case s.st == wait && s.notYet && !f.slow(p, now):
				hopeful = true
			}
		}
		for i := 0; i < n && !hopeful; i++ {
			if p := f.peers[i]; slots[i].st == idle && f.up(p, now) {
				if p.fails >= o.FailLimit {
					p.probing, slots[i].probe = true, true
				}
				launch(i, now)
				hopeful = f.hopeful(&slots[i], p, now)
			}
		}
		if !hopeful && inflight == 0 {
			// Last resort: a source passed over as down, then one that
			// failed for this item, after its backoff.
			for i := range slots {
				if slots[i].st == idle {
					launch(i, now)
					hopeful = true
					break
				}
			}
		}
		var next time.Time
		for i := range slots {
			s := &slots[i]
			if p := f.peers[i]; s.st == flight && f.hopeful(s, p, now) && n > 1 {
				// Wake when it stops being hopeful, to ask the next one.
				t := s.since.Add(o.HedgeAfter)
				if !p.gave.IsZero() {
					q := f.quietAfter(p)
					t = s.since.Add(q)
					if g := p.gave.Add(q); g.After(t) {
						t = g
					}
				}
				if next.IsZero() || t.Before(next) {
					next = t
				}
			}
			if s.st != wait || (!s.notYet && (hopeful || inflight > 0)) {
				continue
			}
			if !s.notYet && !s.at.After(now) {
				launch(i, now)
				continue
			}
			if next.IsZero() || s.at.Before(next) {
				next = s.at
			}
		}
		f.mu.Unlock()
		if inflight == 0 && next.IsZero() {
			e := &Error{What: what}
			for i, s := range slots {
				if s.last != nil {
					e.Sources = append(e.Sources, f.peers[i].name)
					e.Errs = append(e.Errs, s.last)
				}
			}
			return -1, e
		}
		var tick <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-tick:
			continue
		case r := <-results:
			inflight--
			s := &slots[r.i]
			if s.buf {
				bufBusy, s.buf = false, false
			}
			s.probe = false
			err := r.err
			if err == nil {
				if err = accept(r.i, r.v); err == nil {
					f.took(r.i, size, time.Since(s.since))
					return r.i, nil
				}
				s.st, s.last = out, err
				f.reached(r.i, false)
				f.report(r.i, what, err)
				continue
			}
			if ctx.Err() != nil {
				return -1, ctx.Err()
			}
			s.last = err
			switch classify(err) {
			case notYet:
				if f.stalledNow(r.i, what, time.Now()) {
					s.st = out
					s.last = fmt.Errorf("%w: it gave nothing new for %s and says %w", ErrStalled, o.StallAfter, err)
					continue
				}
				if s.pause == 0 {
					s.pause = o.Poll
				}
				s.st, s.notYet, s.at = wait, true, time.Now().Add(s.pause)
				s.pause = min(2*s.pause, o.PollMax)
			case failed:
				if s.again < o.Transient && f.forgive(r.i, s.since, err) {
					s.again++
					f.report(r.i, what, fmt.Errorf("%w; it still answers: asked again", err))
					s.st, s.notYet, s.at = wait, false, time.Now().Add(o.Backoff<<min(s.again-1, 5))
					continue
				}
				f.failed(r.i, what, err)
				s.tries++
				if s.tries >= o.Tries {
					s.st = out
				} else {
					s.st, s.notYet, s.at = wait, false, time.Now().Add(o.Backoff<<(s.tries-1))
				}
			default: // not found, bad bytes
				s.st = out
				f.reached(r.i, false)
				f.report(r.i, what, err)
			}
		}
	}
}

// settle notes the answer to a request made needless by another
// source's: it still says how the source is. A probe cut short says
// nothing, so the source stays passed over.
func (f *Fetcher) settle(i int, what string, probe, quiet bool, since time.Time, err error) {
	switch {
	case errors.Is(err, context.Canceled) && quiet:
		// Cut short after it went quiet: pass it over at once, or every
		// later item would wait QuietAfter on it alone again.
		f.down(i, what, fmt.Errorf("%w: it gave nothing for %s", ErrQuiet, time.Since(since).Round(time.Second)))
	case errors.Is(err, context.Canceled):
		f.mu.Lock()
		if p := f.peers[i]; probe {
			p.probing = false
			p.downUntil = time.Now().Add(f.opt.DownFor)
		}
		f.mu.Unlock()
	case classify(err) == failed:
		if f.forgive(i, since, err) {
			f.report(i, what, err)
		} else {
			f.failed(i, what, err)
		}
	default:
		f.reached(i, classify(err) == notYet)
	}
}

// forgive says a failed request to source i, made at since, was the
// connection's failure while the source still answers (it gave an item
// since): a saturated server, not a dead one, so it is not counted
// against the source.
func (f *Fetcher) forgive(i int, since time.Time, err error) bool {
	if !transient(err) {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peers[i].gave.After(since)
}

// up says whether p may be asked when other sources are left: it is not
// down, or its time out is over and no other request is probing it.
func (f *Fetcher) up(p *peer, now time.Time) bool {
	return p.fails < f.opt.FailLimit || (!p.probing && !now.Before(p.downUntil))
}

// hopeful says the request in flight in s is worth waiting for alone: not
// to a source that lags, not a probe of a down source, not one taking
// longer than HedgeAfter to a source that never gave anything (a host
// that drops packets costs the client's whole timeout), and not one
// taking longer than QuietAfter to a source that has given nothing for
// as long (it was up, and went quiet).
func (f *Fetcher) hopeful(s *slot, p *peer, now time.Time) bool {
	if f.slow(p, now) || s.probe {
		return false
	}
	if p.gave.IsZero() {
		return now.Sub(s.since) < f.opt.HedgeAfter
	}
	return !f.quiet(p, s.since, now)
}

// quiet says a request made at since to p, a source that gave before,
// has waited longer than the source's quiet time and p has given nothing
// for as long. Called with f.mu held.
func (f *Fetcher) quiet(p *peer, since, now time.Time) bool {
	if p.gave.IsZero() {
		return false
	}
	q := f.quietAfter(p)
	return now.Sub(since) >= q && now.Sub(p.gave) >= q
}

// quietAfter is how long p may give nothing before it counts as quiet:
// QuietAfter, or twice its last item's time when that was longer (a
// large chunk over a slow link is not a source gone).
func (f *Fetcher) quietAfter(p *peer) time.Duration {
	return max(f.opt.QuietAfter, 2*p.lastTook)
}

// slow says p answered "not yet" last and has given nothing new lately:
// waiting for it alone would be waiting for a stalled parent.
func (f *Fetcher) slow(p *peer, now time.Time) bool {
	return p.lagging && (p.gave.IsZero() || now.Sub(p.gave) >= f.opt.HedgeAfter)
}

func (f *Fetcher) report(i int, what string, err error) {
	if f.opt.OnError != nil {
		f.opt.OnError(i, what, err)
	}
}

// reached notes an answer from source i: it is reachable.
func (f *Fetcher) reached(i int, lagging bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.peers[i]
	p.fails, p.probing, p.lagging = 0, false, lagging
}

// took counts an item taken from source i.
func (f *Fetcher) took(i int, size int64, took time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.peers[i]
	p.fails, p.probing, p.lagging, p.stalled = 0, false, false, false
	p.gave = time.Now()
	p.lastTook = took
	p.bytes += size
}

// down passes source i over for DownFor at once.
func (f *Fetcher) down(i int, what string, err error) {
	f.mu.Lock()
	p := f.peers[i]
	p.fails = max(p.fails, f.opt.FailLimit)
	p.probing = false
	p.downUntil = time.Now().Add(f.opt.DownFor)
	f.mu.Unlock()
	f.report(i, what, fmt.Errorf("%w: passed over for %s", err, f.opt.DownFor))
}

// failed notes a failed request to source i; the FailLimit'th in a row
// passes it over for DownFor.
func (f *Fetcher) failed(i int, what string, err error) {
	f.mu.Lock()
	p := f.peers[i]
	p.fails++
	p.probing = false
	fails := p.fails
	wentDown := fails >= f.opt.FailLimit
	if wentDown {
		p.downUntil = time.Now().Add(f.opt.DownFor)
	}
	f.mu.Unlock()
	if wentDown {
		// fails, not p.fails: another item's request may be counting.
		err = fmt.Errorf("%w; %d failures in a row: passed over for %s", err, fails, f.opt.DownFor)
	}
	f.report(i, what, err)
}

// stalledNow notes a "not yet" from source i and says whether it has
// stalled: nothing new from it for StallAfter. A stall is reported once,
// until the source gives something again.
func (f *Fetcher) stalledNow(i int, what string, now time.Time) bool {
	f.mu.Lock()
	p := f.peers[i]
	p.fails, p.probing, p.lagging = 0, false, true
	since := p.gave
	if since.IsZero() {
		since = p.asked
	}
	stalled := now.Sub(since) >= f.opt.StallAfter
	first := stalled && !p.stalled
	p.stalled = p.stalled || stalled
	f.mu.Unlock()
	if first {
		f.report(i, what, fmt.Errorf("%w: %s gave nothing new for %s and answers %w", ErrStalled, p.name, f.opt.StallAfter, store.ErrNotYet))
	}
	return stalled
}
