package eventlog_test

import (
	"testing"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/verify/verifytest"
)

// benchLog is the 51-event sha1 + sha256 log of a simulated node.
func benchLog() []byte { return verifytest.BootLog("bench").Bytes() }

func BenchmarkParse(b *testing.B) {
	for _, name := range []string{"builder-51", "gdc-host.bin"} {
		raw := benchLog()
		if name != "builder-51" {
			raw = readTestdata(b, name)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := eventlog.Parse(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReplay(b *testing.B) {
	l, err := eventlog.Parse(benchLog())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := l.Replay(evidence.SHA256, false); err != nil {
			b.Fatal(err)
		}
	}
}
