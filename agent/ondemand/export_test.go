package ondemand

// WaitReadahead waits for the read-ahead fetches in flight: a test's
// decoder must outlive them.
func (r *Reader) WaitReadahead() {
	if r.ra != nil {
		r.ra.wg.Wait()
	}
}
