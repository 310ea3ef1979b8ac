package recorder

import (
	"strings"
	"sync"
	"time"

	"trustpool/internal/verdict"
)

// Cache holds every host's latest verdict in memory, so relying parties are
// answered without touching the store or a node. Reads fail closed through
// verdict.At. It is written by the Recorder only.
type Cache struct {
	now func() time.Time

	mu sync.RWMutex // guards m
	m  map[string]verdict.Verdict
}

// NewCache returns an empty cache reading levels at now().
func NewCache(now func() time.Time) *Cache {
	return &Cache{now: now, m: map[string]verdict.Verdict{}}
}

// Verdict returns host's latest verdict as stored (callers apply At). Host
// names are canonical in lower case; a scheduler's other spelling of one
// finds it (looked up again in lower case only when the name as given is
// not found: the scheduler's path stays one map read).
func (c *Cache) Verdict(host string) (verdict.Verdict, bool) {
	c.mu.RLock()
	v, ok := c.m[host]
	c.mu.RUnlock()
	if ok {
		return v, true
	}
	if lower := strings.ToLower(host); lower != host {
		return c.Verdict(lower)
	}
	return v, false
}

// Level is host's level now: unknown when missing or expired.
func (c *Cache) Level(host string) verdict.Level {
	v, _ := c.Verdict(host)
	return v.At(c.now())
}

// Snapshot returns every verdict.
func (c *Cache) Snapshot() []verdict.Verdict {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]verdict.Verdict, 0, len(c.m))
	for _, v := range c.m {
		out = append(out, v)
	}
	return out
}

// set makes v the host's verdict. Only the recorder calls it, right after
// the store wrote v, under the host's lock: the cache follows the store's
// order, so it needs no ordering of its own.
func (c *Cache) set(v verdict.Verdict) {
	c.mu.Lock()
	c.m[v.Host] = v
	c.mu.Unlock()
}

func (c *Cache) remove(host string) {
	c.mu.Lock()
	delete(c.m, host)
	c.mu.Unlock()
}
