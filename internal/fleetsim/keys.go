package fleetsim

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
)

// RSAKeys returns n distinct RSA-2048 keys. Generating one takes about
// 70 ms of CPU, so a fleet of 10,000 nodes with RSA EKs and AKs would spend
// over 20 minutes of CPU before it started; with a cache file (PEM "RSA
// PRIVATE KEY" blocks, created when missing) the keys are read from it and
// only the missing ones are generated, on every CPU, and appended. Keys of
// one run are distinct; runs that share a cache reuse them, which is fine
// for test equipment whose servers are thrown away after each run. cache ""
// generates every key.
func RSAKeys(n int, cache string) ([]*rsa.PrivateKey, error) {
	var keys []*rsa.PrivateKey
	if cache != "" {
		var err error
		if keys, err = readKeys(cache, 0, n); err != nil {
			return nil, err
		}
	}
	fresh, err := generate(n-len(keys), cache)
	if err != nil {
		return nil, err
	}
	return append(keys, fresh...), nil
}

// FillRSAKeys makes the cache hold at least n keys, generating and
// appending the missing ones, without parsing those it holds: a fleet
// spread over processes fills the cache once, before its processes read
// their slices of it with CachedRSAKeys (concurrent appends would race).
func FillRSAKeys(n int, cache string) error {
	b, err := os.ReadFile(cache)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("key cache: %w", err)
	}
	have := 0
	for have < n {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		have++
	}
	_, err = generate(n-have, cache)
	return err
}

// CachedRSAKeys returns keys [first, first+n) of the cache and never writes
// it: an error when the cache holds fewer (FillRSAKeys first).
func CachedRSAKeys(cache string, first, n int) ([]*rsa.PrivateKey, error) {
	keys, err := readKeys(cache, first, n)
	if err != nil {
		return nil, err
	}
	if len(keys) < n {
		return nil, fmt.Errorf("key cache %s: %d keys from key %d wanted, it holds %d (fill it first)", cache, n, first, first+len(keys))
	}
	return keys, nil
}

// readKeys parses up to n keys of the cache from key first on (those
// before are skipped unparsed); a missing cache holds none.
func readKeys(cache string, first, n int) ([]*rsa.PrivateKey, error) {
	b, err := os.ReadFile(cache)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("key cache: %w", err)
	}
	var keys []*rsa.PrivateKey
	for i := 0; len(keys) < n; i++ {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		if i < first {
			continue
		}
		k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
		if err != nil || k.N.BitLen() != 2048 {
			return nil, fmt.Errorf("key cache %s: a block is not an RSA-2048 key", cache)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// generate makes n keys on every CPU and appends them to the cache (when
// not "").
func generate(n int, cache string) ([]*rsa.PrivateKey, error) {
	if n <= 0 {
		return nil, nil
	}
	fresh := make([]*rsa.PrivateKey, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	work := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range work {
				fresh[i], errs[i] = rsa.GenerateKey(rand.Reader, 2048)
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("generate RSA keys: %w", err)
	}
	if cache != "" {
		if err := appendKeys(cache, fresh); err != nil {
			return nil, err
		}
	}
	return fresh, nil
}

func appendKeys(cache string, keys []*rsa.PrivateKey) error {
	if err := os.MkdirAll(filepath.Dir(cache), 0o700); err != nil {
		return fmt.Errorf("key cache: %w", err)
	}
	f, err := os.OpenFile(cache, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("key cache: %w", err)
	}
	var buf []byte
	for _, k := range keys {
		buf = append(buf, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})...)
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return fmt.Errorf("key cache: %w", err)
	}
	return f.Close()
}
