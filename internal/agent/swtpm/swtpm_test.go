package swtpm_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"hash"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"trustpool/internal/agent/swtpm"
	"trustpool/internal/agent/swtpm/swtpmtest"
	"trustpool/internal/agent/tpm"
	"trustpool/internal/evidence"
)

var drtmPCRs = []int{17, 18, 19, 20, 21, 22}

func newHash(b evidence.Bank) hash.Hash {
	switch b {
	case evidence.SHA1:
		return sha1.New()
	case evidence.SHA256:
		return sha256.New()
	case evidence.SHA384:
		return sha512.New384()
	}
	panic("unknown bank " + b)
}

func sum(b evidence.Bank, parts ...[]byte) []byte {
	h := newHash(b)
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

// launchPCR17 is PCR 17 after a dynamic launch that measured data:
// the PCR is reset to zero and extended with the data's hash.
func launchPCR17(b evidence.Bank, data []byte) []byte {
	return sum(b, make([]byte, b.Size()), sum(b, data))
}

func openTPM(t *testing.T, p *swtpm.Process) *tpm.TPM {
	t.Helper()
	tp, err := tpm.Open(p.Addr())
	if err != nil {
		t.Fatalf("tpm.Open(%s): %v", p.Addr(), err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

// readDRTM reads PCRs 17-22 in every allocated known bank.
func readDRTM(t *testing.T, tp *tpm.TPM) []evidence.PCR {
	t.Helper()
	banks, err := tp.Banks()
	if err != nil {
		t.Fatal(err)
	}
	var sel []evidence.Selection
	for _, b := range banks {
		sel = append(sel, evidence.Selection{Bank: b, PCRs: drtmPCRs})
	}
	pcrs, err := tp.ReadPCRs(sel)
	if err != nil {
		t.Fatal(err)
	}
	return pcrs
}

func TestStartStop(t *testing.T) {
	p := swtpmtest.Start(t, "")
	for _, a := range []string{p.DataAddr(), p.CtrlAddr()} {
		host, _, err := net.SplitHostPort(a)
		if err != nil || host != "127.0.0.1" {
			t.Errorf("address %q is not on 127.0.0.1", a)
		}
	}
	if p.Addr() != "swtpm://"+p.DataAddr() {
		t.Errorf("Addr() = %q, want swtpm://%s", p.Addr(), p.DataAddr())
	}
	tp, err := tpm.Open(p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Banks(); err != nil {
		t.Fatalf("TPM does not answer: %v", err)
	}
	tp.Close()

	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if c, err := net.Dial("tcp", p.DataAddr()); err == nil {
		c.Close()
		t.Error("data channel still accepts connections after Stop")
	}
}

func TestStartErrors(t *testing.T) {
	swtpmtest.RequireBinary(t, swtpm.Binary)
	// swtpm binds its ports before it reads its state, then exits when the
	// state is corrupt: Start must notice and not report it ready.
	corrupt := t.TempDir()
	if err := os.WriteFile(filepath.Join(corrupt, "tpm2-00.permall"), []byte("not a TPM state"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  swtpm.Config
	}{
		{"no state dir", swtpm.Config{}},
		{"state dir missing", swtpm.Config{StateDir: t.TempDir() + "/missing"}},
		{"state corrupt", swtpm.Config{StateDir: corrupt}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := swtpm.Start(t.Context(), tc.cfg)
			if err == nil {
				p.Stop()
				t.Fatal("Start succeeded")
			}
			t.Logf("Start: %v", err)
		})
	}
}

func TestStartCancelled(t *testing.T) {
	swtpmtest.RequireBinary(t, swtpm.Binary)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if p, err := swtpm.Start(ctx, swtpm.Config{StateDir: t.TempDir()}); err == nil {
		p.Stop()
		t.Fatal("Start with a cancelled context succeeded")
	}
}

func TestDynamicLaunch(t *testing.T) {
	p := swtpmtest.Start(t, "")
	tp := openTPM(t, p)

	for _, pcr := range readDRTM(t, tp) {
		if !bytes.Equal(pcr.Digest, bytes.Repeat([]byte{0xff}, pcr.Bank.Size())) {
			t.Fatalf("before launch PCR %d (%s) = %x, want all ones", pcr.Index, pcr.Bank, pcr.Digest)
		}
	}

	// More than one CMD_HASH_DATA chunk, not a multiple of it.
	data := bytes.Repeat([]byte("SINIT ACM + MLE "), 700)
	if err := p.HashStart(); err != nil {
		t.Fatalf("HashStart: %v", err)
	}
	if err := p.HashData(data[:5000]); err != nil {
		t.Fatalf("HashData: %v", err)
	}
	if err := p.HashData(data[5000:]); err != nil {
		t.Fatalf("HashData: %v", err)
	}
	if err := p.HashEnd(); err != nil {
		t.Fatalf("HashEnd: %v", err)
	}

	for _, pcr := range readDRTM(t, tp) {
		want := make([]byte, pcr.Bank.Size())
		if pcr.Index == 17 {
			want = launchPCR17(pcr.Bank, data)
		}
		if !bytes.Equal(pcr.Digest, want) {
			t.Errorf("after launch PCR %d (%s) = %x, want %x", pcr.Index, pcr.Bank, pcr.Digest, want)
		}
	}
}

// TestDynamicLaunchSwtpmIoctl cross-checks HashStart/Data/End against
// swtpm's own tool: `swtpm_ioctl -h DATA` must give the same PCR 17.
func TestDynamicLaunchSwtpmIoctl(t *testing.T) {
	swtpmtest.RequireBinary(t, "swtpm_ioctl")
	const data = "tboot 1.10.5 + hypervisor"
	ours := swtpmtest.Start(t, "")
	theirs := swtpmtest.Start(t, "")
	if err := ours.HashStart(); err != nil {
		t.Fatal(err)
	}
	if err := ours.HashData([]byte(data)); err != nil {
		t.Fatal(err)
	}
	if err := ours.HashEnd(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("swtpm_ioctl", "--tcp", theirs.CtrlAddr(), "-h", data).CombinedOutput()
	if err != nil {
		t.Fatalf("swtpm_ioctl -h: %v: %s", err, out)
	}
	a, b := readDRTM(t, openTPM(t, ours)), readDRTM(t, openTPM(t, theirs))
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("read %d and %d PCRs", len(a), len(b))
	}
	for i := range a {
		if !bytes.Equal(a[i].Digest, b[i].Digest) {
			t.Errorf("PCR %d (%s): ours %x, swtpm_ioctl %x", a[i].Index, a[i].Bank, a[i].Digest, b[i].Digest)
		}
	}
	// a[0] is PCR 17 of the weakest bank.
	if want := launchPCR17(a[0].Bank, []byte(data)); a[0].Index != 17 || !bytes.Equal(a[0].Digest, want) {
		t.Errorf("PCR %d (%s) = %x, want PCR 17 = %x", a[0].Index, a[0].Bank, a[0].Digest, want)
	}
}

func TestLocality(t *testing.T) {
	p := swtpmtest.Start(t, "")
	tp := openTPM(t, p)
	if err := p.HashStart(); err != nil {
		t.Fatal(err)
	}
	if err := p.HashEnd(); err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("vmm"))
	extend18 := func() error { return tp.Extend(18, map[evidence.Bank][]byte{evidence.SHA256: d[:]}) }
	read18 := func() []byte {
		pcrs, err := tp.ReadPCRs([]evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{18}}})
		if err != nil {
			t.Fatal(err)
		}
		return pcrs[0].Digest
	}

	// Locality 0, the default: PCR 18 is out of reach.
	if err := extend18(); !errors.Is(err, tpm2.TPMRCLocality) {
		t.Fatalf("extend PCR 18 at locality 0 = %v, want TPM_RC_LOCALITY", err)
	}
	if got := read18(); !bytes.Equal(got, make([]byte, 32)) {
		t.Fatalf("PCR 18 changed by a refused extend: %x", got)
	}

	// Locality 3, as tboot runs after SENTER: the extend succeeds, on the
	// data connection that was already open.
	if err := p.SetLocality(3); err != nil {
		t.Fatalf("SetLocality(3): %v", err)
	}
	if err := extend18(); err != nil {
		t.Fatalf("extend PCR 18 at locality 3: %v", err)
	}
	if got, want := read18(), sum(evidence.SHA256, make([]byte, 32), d[:]); !bytes.Equal(got, want) {
		t.Errorf("PCR 18 = %x, want %x", got, want)
	}

	// The locality belongs to the TPM, not to the connection: a new
	// connection still runs at locality 3 until it is set back.
	tp.Close()
	tp = openTPM(t, p)
	if err := extend18(); err != nil {
		t.Errorf("extend PCR 18 on a new connection after SetLocality(3): %v", err)
	}
	if err := p.SetLocality(0); err != nil {
		t.Fatal(err)
	}
	if err := extend18(); !errors.Is(err, tpm2.TPMRCLocality) {
		t.Errorf("extend PCR 18 after SetLocality(0) = %v, want TPM_RC_LOCALITY", err)
	}
}

// TestFramedCommandCarriesLocality shows why package tpm sends raw commands:
// a command in the Microsoft simulator's framing (go-tpm's transport/tcp)
// carries a locality byte, and swtpm runs it, and every later command, at
// that locality, overriding CMD_SET_LOCALITY.
func TestFramedCommandCarriesLocality(t *testing.T) {
	p := swtpmtest.Start(t, "")
	if err := p.HashStart(); err != nil {
		t.Fatal(err)
	}
	if err := p.HashEnd(); err != nil {
		t.Fatal(err)
	}
	if err := p.SetLocality(3); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", p.DataAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tc := range []struct {
		locality byte
		want     uint32 // response code
	}{
		{0, uint32(tpm2.TPMRCLocality)},
		{3, 0},
	} {
		rc := framedExtend18(t, conn, tc.locality)
		if rc != tc.want {
			t.Errorf("framed extend of PCR 18 at locality %d after SetLocality(3): rc 0x%x, want 0x%x", tc.locality, rc, tc.want)
		}
	}
}

// framedExtend18 sends TPM2_PCR_Extend(18, sha256) framed as
// TPM_SEND_COMMAND(locality) and returns the TPM's response code.
func framedExtend18(t *testing.T, conn net.Conn, locality byte) uint32 {
	t.Helper()
	var cmd []byte
	cmd = binary.BigEndian.AppendUint16(cmd, 0x8002) // TPM_ST_SESSIONS
	cmd = binary.BigEndian.AppendUint32(cmd, 0)      // size, set below
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMCCPCRExtend))
	cmd = binary.BigEndian.AppendUint32(cmd, 18)
	cmd = binary.BigEndian.AppendUint32(cmd, 9)          // authorization size
	cmd = binary.BigEndian.AppendUint32(cmd, 0x40000009) // TPM_RS_PW
	cmd = append(cmd, 0, 0, 0, 0, 0)                     // nonce, attributes, empty password
	cmd = binary.BigEndian.AppendUint32(cmd, 1)          // one digest
	cmd = binary.BigEndian.AppendUint16(cmd, uint16(tpm2.TPMAlgSHA256))
	cmd = append(cmd, make([]byte, 32)...)
	binary.BigEndian.PutUint32(cmd[2:], uint32(len(cmd)))

	var frame []byte
	frame = binary.BigEndian.AppendUint32(frame, 8) // TPM_SEND_COMMAND
	frame = append(frame, locality)
	frame = binary.BigEndian.AppendUint32(frame, uint32(len(cmd)))
	frame = append(frame, cmd...)
	if _, err := conn.Write(frame); err != nil {
		t.Fatal(err)
	}
	var size uint32
	if err := binary.Read(conn, binary.BigEndian, &size); err != nil {
		t.Fatal(err)
	}
	rsp := make([]byte, size+4) // response and the trailing acknowledgement
	if _, err := io.ReadFull(conn, rsp); err != nil {
		t.Fatal(err)
	}
	if size < 10 {
		t.Fatalf("response of %d bytes", size)
	}
	return binary.BigEndian.Uint32(rsp[6:10])
}

func TestCtrlErrors(t *testing.T) {
	p := swtpmtest.Start(t, "")
	tests := []struct {
		name string
		call func() error
		want uint32
	}{
		{"locality 5", func() error { return p.SetLocality(5) }, swtpm.ResultBadLocality},
		{"locality 255", func() error { return p.SetLocality(255) }, swtpm.ResultBadLocality},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var ce *swtpm.CtrlError
			if !errors.As(err, &ce) || ce.Result != tc.want {
				t.Fatalf("error = %v, want a CtrlError with result 0x%x", err, tc.want)
			}
			if !strings.Contains(err.Error(), "CMD_SET_LOCALITY") {
				t.Errorf("error %q does not name the command", err)
			}
		})
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.SetLocality(0); err == nil {
		t.Error("SetLocality on a stopped swtpm succeeded")
	}
}
