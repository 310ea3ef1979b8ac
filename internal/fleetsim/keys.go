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
		b, err := os.ReadFile(cache)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("key cache: %w", err)
		}
		for len(keys) < n {
			var blk *pem.Block
			if blk, b = pem.Decode(b); blk == nil {
				break
			}
			k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
			if err != nil || k.N.BitLen() != 2048 {
				return nil, fmt.Errorf("key cache %s: a block is not an RSA-2048 key", cache)
			}
			keys = append(keys, k)
		}
	}
	missing := n - len(keys)
	if missing <= 0 {
		return keys, nil
	}
	fresh := make([]*rsa.PrivateKey, missing)
	errs := make([]error, missing)
	var wg sync.WaitGroup
	work := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range work {
				fresh[i], errs[i] = rsa.GenerateKey(rand.Reader, 2048)
			}
		})
	}
	for i := range missing {
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
	return append(keys, fresh...), nil
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
