package integrity

import (
	"crypto/rand"
	"fmt"
	"sync"
	"time"
)

// nonceSize is the challenge nonce length: 32 random bytes never repeat.
const nonceSize = 32

// nonces remembers the challenges in flight. A nonce is accepted once, for
// the host it was issued to, before it expires: a replayed or borrowed quote
// can never verify.
type nonces struct {
	mu sync.Mutex // guards m
	m  map[string]issued
}

type issued struct {
	host    string
	expires time.Time
}

func newNonces() *nonces { return &nonces{m: map[string]issued{}} }

func (n *nonces) issue(host string, expires time.Time) []byte {
	b, _ := n.issueAtMost(host, expires, time.Time{}, 0)
	return b
}

// issueAtMost issues a nonce for host unless limit > 0 and host already
// holds limit unexpired, unused ones at now (then nil, false): a push agent
// cannot make the server remember challenges without bound.
func (n *nonces) issueAtMost(host string, expires, now time.Time, limit int) ([]byte, bool) {
	b := make([]byte, nonceSize)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if limit > 0 {
		held := 0
		for _, is := range n.m {
			if is.host == host && now.Before(is.expires) {
				held++
			}
		}
		if held >= limit {
			return nil, false
		}
	}
	n.m[string(b)] = issued{host: host, expires: expires}
	return b, true
}

// consume reports whether nonce was issued to host, is unexpired and unused,
// and marks it used.
func (n *nonces) consume(nonce []byte, host string, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	is, ok := n.m[string(nonce)]
	delete(n.m, string(nonce))
	return ok && is.host == host && now.Before(is.expires)
}

// sweep forgets expired nonces: challenges that were never answered.
func (n *nonces) sweep(now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, is := range n.m {
		if !now.Before(is.expires) {
			delete(n.m, k)
		}
	}
}

// forget drops host's outstanding nonces (the host was deleted).
func (n *nonces) forget(host string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, is := range n.m {
		if is.host == host {
			delete(n.m, k)
		}
	}
}
