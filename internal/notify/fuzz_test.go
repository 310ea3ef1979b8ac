package notify_test

import (
	"strings"
	"testing"

	"trustpool/internal/notify"
)

// FuzzVerifySignature feeds arbitrary signature headers (the part of a
// delivery a receiver must parse) to VerifySignature: it must not panic,
// and it must accept only the signature Sign makes.
func FuzzVerifySignature(f *testing.F) {
	secret := []byte("0123456789abcdef-fuzz")
	body := []byte(`{"event":"trust_level_changed","host":"node1"}`)
	f.Add(secret, body, notify.Sign(secret, body))
	f.Add(secret, body, "sha256=")
	f.Add(secret, body, "sha256="+strings.Repeat("0", 64))
	f.Add(secret, body, "sha256="+strings.Repeat("g", 64))
	f.Add(secret, body, "SHA256="+strings.Repeat("a", 64))
	f.Add([]byte{}, body, notify.Sign(nil, body))
	f.Add(secret, []byte{}, "")
	f.Fuzz(func(t *testing.T, secret, body []byte, header string) {
		ok := notify.VerifySignature(secret, body, header)
		if ok && (len(secret) == 0 || !strings.EqualFold(header, notify.Sign(secret, body))) {
			t.Fatalf("VerifySignature accepted %q for a body signed %q", header, notify.Sign(secret, body))
		}
		if len(secret) > 0 && !notify.VerifySignature(secret, body, notify.Sign(secret, body)) {
			t.Fatal("VerifySignature rejected Sign's own signature")
		}
	})
}
