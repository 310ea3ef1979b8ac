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
	b := make([]byte, nonceSize)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	n.mu.Lock()
	n.m[string(b)] = issued{host: host, expires: expires}
	n.mu.Unlock()
	return b
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
