package chunkcache

import (
	"testing"
	"time"
)

// waiters is how many gets wait for key's load now.
func (c *Cache[K]) waiters(key K) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		return e.waiting
	}
	return 0
}

// awaitWaiters polls until n gets wait for key's load (or fails t after
// 10 s): the gets are then in the wait, not still on their way to it.
func awaitWaiters[K comparable](t *testing.T, c *Cache[K], key K, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.waiters(key) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d gets wait for %v after 10 s, want %d", c.waiters(key), key, n)
		}
		time.Sleep(time.Millisecond)
	}
}
