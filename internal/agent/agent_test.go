package agent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/pki"
	"trustpool/internal/txtlog"
	"trustpool/internal/verify/verifytest"
)

// softTPM answers quotes with a software AK over fixed PCR values.
type softTPM struct {
	ak   *verifytest.SoftAK
	pcrs []evidence.PCR
}

func (s *softTPM) EK() ([]byte, []byte, error) { return nil, nil, errors.New("no EK") }
func (s *softTPM) AK() ([]byte, error)         { return s.ak.Public(), nil }
func (s *softTPM) ActivateCredential(_, _ []byte) ([]byte, error) {
	return nil, errors.New("no activation")
}
func (s *softTPM) QuoteWithPCRs(nonce []byte, sel []evidence.Selection) ([]byte, []byte, []evidence.PCR, error) {
	attest, sig, err := s.ak.Quote(nonce, sel, s.pcrs)
	return attest, sig, s.pcrs, err
}

// memImage is sparse physical memory: regions at their base addresses;
// reading outside every region fails, as /dev/mem does.
type memImage map[uint64][]byte

func (m memImage) ReadAt(p []byte, off int64) (int, error) {
	for base, b := range m {
		if uint64(off) >= base && uint64(off)+uint64(len(p)) <= base+uint64(len(b)) {
			return copy(p, b[uint64(off)-base:]), nil
		}
	}
	return 0, io.EOF
}

func (memImage) Close() error { return nil }

// txtImage lays out the memory of a host after a TXT launch (Intel TXT
// Software Development Guide, appendix C): the public configuration
// registers, a heap of BiosData, OsMleData, OsSinitData (version 7, with a
// HEAP_EVENT_LOG_POINTER_ELEMENT2_1) and SinitMleData, and the event
// container holding log.
func txtImage(log []byte) memImage {
	const heapBase, heapSize, container, allocated = 0x7a000000, 0x10000, 0x7b000000, 0x10000
	le := binary.LittleEndian
	table := func(body []byte) []byte { return append(le.AppendUint64(nil, uint64(8+len(body))), body...) }
	regs := make([]byte, 0x400)
	le.PutUint64(regs[0x300:], heapBase)
	le.PutUint64(regs[0x308:], heapSize)
	sinit := le.AppendUint32(le.AppendUint32(nil, 7), 0) // version, flags
	for range 9 {
		sinit = le.AppendUint64(sinit, 0x1000)
	}
	sinit = le.AppendUint64(le.AppendUint32(sinit, 0), 0)         // capabilities, EFI RSDT pointer
	sinit = le.AppendUint32(le.AppendUint32(sinit, 8), 8+8+4+4+4) // the log pointer element
	sinit = le.AppendUint32(le.AppendUint32(le.AppendUint32(le.AppendUint64(sinit, container), allocated), 0), uint32(len(log)))
	sinit = le.AppendUint32(le.AppendUint32(sinit, 0), 8) // end element
	heap := make([]byte, heapSize)
	var h []byte
	h = append(h, table(make([]byte, 0x20))...) // BiosData
	h = append(h, table(make([]byte, 0x40))...) // OsMleData
	h = append(h, table(sinit)...)
	h = append(h, table(make([]byte, 0x80))...) // SinitMleData
	copy(heap, h)
	c := make([]byte, allocated)
	copy(c, log)
	return memImage{txtlog.PublicSpace: regs, heapBase: heap, container: c}
}

func testConfig(t *testing.T) Config {
	return Config{Name: "node1", Server: "https://127.0.0.1:1", ServerCA: testCA(t), Listen: "127.0.0.1:0", StateDir: t.TempDir()}
}

// testCA is a CA certificate: the agent only parses it here.
func testCA(t *testing.T) []byte {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(t.TempDir(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return ca.CertPEM
}

func TestDRTMFromTXTHeap(t *testing.T) {
	ak, err := verifytest.NewSoftAK(verifytest.P256)
	if err != nil {
		t.Fatal(err)
	}
	sel := []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{17}}}
	tp := &softTPM{ak: ak, pcrs: []evidence.PCR{{Bank: evidence.SHA256, Index: 17, Digest: make([]byte, 32)}}}
	log := verifytest.DRTMLog("xen-4.17").Bytes()
	cfg := testConfig(t)
	cfg.DRTMLog = DRTMFromTXTHeap

	opened := 0
	a, err := newAgent(cfg, tp, func() (physMem, error) { opened++; return txtImage(log), nil })
	if err != nil {
		t.Fatalf("newAgent: %v", err)
	}
	for range 2 {
		ev, err := a.Evidence(&evidence.Challenge{Nonce: bytes.Repeat([]byte{7}, 32), Selection: sel})
		if err != nil {
			t.Fatalf("Evidence: %v", err)
		}
		if !bytes.Equal(ev.DRTMLog, log) {
			t.Fatalf("DRTM log is %d bytes, want the %d-byte log from the TXT heap", len(ev.DRTMLog), len(log))
		}
		if len(ev.PCRs) != 1 || ev.PCRs[0].Index != 17 {
			t.Fatalf("PCRs = %+v, want those QuoteWithPCRs returned", ev.PCRs)
		}
	}
	if opened != 1 {
		t.Errorf("physical memory opened %d times, want once at start", opened)
	}
}

func TestDRTMFromTXTHeapErrors(t *testing.T) {
	tp := &softTPM{}
	noTXT := txtImage([]byte("x"))
	regs := noTXT[txtlog.PublicSpace]
	for i := 0x300; i < 0x310; i++ {
		regs[i] = 0xff
	}
	for _, tc := range []struct {
		name string
		open func() (physMem, error)
		want string
	}{
		{"no /dev/mem access", func() (physMem, error) { return nil, errors.New("open /dev/mem: permission denied") }, "needs root"},
		{"no TXT chipset", func() (physMem, error) { return noTXT, nil }, "no Intel TXT heap"},
		{"nothing mapped", func() (physMem, error) { return memImage{}, nil }, "cannot read the TXT public configuration registers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.DRTMLog = DRTMFromTXTHeap
			_, err := newAgent(cfg, tp, tc.open)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--drtm-log txt-heap") {
				t.Fatalf("newAgent = %v, want an error naming the option and saying %q", err, tc.want)
			}
		})
	}

	// A DRTM log file is read for each challenge, physical memory never.
	cfg := testConfig(t)
	cfg.DRTMLog = t.TempDir() + "/missing.log"
	if _, err := newAgent(cfg, tp, func() (physMem, error) { t.Fatal("physical memory opened for a file"); return nil, nil }); err != nil {
		t.Fatalf("newAgent with a DRTM log file: %v", err)
	}
}
