package swtpm

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// Control channel commands (swtpm's include/swtpm/tpm_ioctl.h, "commands
// used by the non-CUSE TPMs"). A request is a big-endian uint32 command code
// and the command's body; a response is the body of the command's "resp"
// union, which for every command used here starts with, or is, a big-endian
// uint32 TPM result code (0 = success). swtpm serves one control connection
// at a time, so each command gets its own short connection.
const (
	cmdShutdown          = 0x03
	cmdGetTPMEstablished = 0x04
	cmdSetLocality       = 0x05
	cmdHashStart         = 0x06
	cmdHashData          = 0x07
	cmdHashEnd           = 0x08

	// hashChunk is the most data one CMD_HASH_DATA carries: the size of
	// swtpm's receive buffer (ptm_hdata.u.req.data).
	hashChunk = 4096
	// ctrlTimeout bounds one control command's round trip.
	ctrlTimeout = 10 * time.Second
)

// Result codes that swtpm answers on the control channel (TPM 1.2 style
// TPM_RESULT values, whatever the emulated TPM's version).
const (
	ResultBadParameter = 0x03
	ResultBadOrdinal   = 0x0a // also: the TPM is not running
	ResultBadLocality  = 0x3d
)

// CtrlError is a control command that swtpm answered with a non-zero result.
type CtrlError struct {
	Command string
	Result  uint32
}

func (e *CtrlError) Error() string {
	return fmt.Sprintf("swtpm control command %s failed: result 0x%x", e.Command, e.Result)
}

func cmdName(cmd uint32) string {
	switch cmd {
	case cmdShutdown:
		return "CMD_SHUTDOWN"
	case cmdGetTPMEstablished:
		return "CMD_GET_TPMESTABLISHED"
	case cmdSetLocality:
		return "CMD_SET_LOCALITY"
	case cmdHashStart:
		return "CMD_HASH_START"
	case cmdHashData:
		return "CMD_HASH_DATA"
	case cmdHashEnd:
		return "CMD_HASH_END"
	}
	return fmt.Sprintf("command 0x%x", cmd)
}

// SetLocality sets the locality of the TPM commands that follow on the data
// channel (CMD_SET_LOCALITY), as a chipset does for the CPU's requests.
// The locality is the TPM's, not a connection's: it applies to every later
// command until it is set again, and only to commands sent raw, as package
// tpm sends them (a command framed with the Microsoft simulator's header
// carries its own locality). PCRs 17-22 can be extended only from locality
// 3 or 4 after a dynamic launch; swtpm rejects localities above 4.
func (p *Process) SetLocality(loc uint8) error {
	return p.ctrl(cmdSetLocality, []byte{loc}, 4)
}

// HashStart begins the TPM's dynamic launch sequence (CMD_HASH_START, the
// _TPM_Hash_Start signal that an Intel TXT GETSEC[SENTER] makes at
// locality 4). Send the measured data with HashData and finish with HashEnd.
func (p *Process) HashStart() error { return p.ctrl(cmdHashStart, nil, 4) }

// HashData adds b to the dynamic launch measurement (CMD_HASH_DATA), in
// chunks that swtpm's control channel accepts.
func (p *Process) HashData(b []byte) error {
	for len(b) > 0 {
		n := min(len(b), hashChunk)
		body := make([]byte, 4+n)
		binary.BigEndian.PutUint32(body, uint32(n))
		copy(body[4:], b[:n])
		if err := p.ctrl(cmdHashData, body, 4); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// HashEnd completes the dynamic launch (CMD_HASH_END, _TPM_Hash_End): the
// TPM resets PCRs 17-22 to zero and extends PCR 17 in every allocated bank
// with the hash of the data, that is, for each bank's hash H:
//
//	PCR[17] = H(00…00 || H(data))   and   PCR[18..22] = 00…00
//
// Before a dynamic launch PCRs 17-22 read all ones (FF…FF).
func (p *Process) HashEnd() error { return p.ctrl(cmdHashEnd, nil, 4) }

// ctrl sends one control command and checks the result code at the start of
// its respLen-byte response.
func (p *Process) ctrl(cmd uint32, body []byte, respLen int) error {
	name := cmdName(cmd)
	conn, err := net.DialTimeout("tcp", p.CtrlAddr(), ctrlTimeout)
	if err != nil {
		return fmt.Errorf("swtpm %s: %w", name, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(ctrlTimeout)); err != nil {
		return fmt.Errorf("swtpm %s: %w", name, err)
	}
	// One write: swtpm reads a command with as few reads as it can, and
	// older versions with exactly one.
	req := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(body)), cmd)
	if _, err := conn.Write(append(req, body...)); err != nil {
		return fmt.Errorf("swtpm %s: send: %w", name, err)
	}
	result, err := readResult(conn, respLen)
	if err != nil {
		return fmt.Errorf("swtpm %s: %w", name, err)
	}
	if result != 0 {
		return &CtrlError{Command: name, Result: result}
	}
	return nil
}

// readResult reads a respLen-byte control response and returns the result
// code in its first four bytes.
func readResult(r io.Reader, respLen int) (uint32, error) {
	if respLen < 4 {
		return 0, fmt.Errorf("response length %d is shorter than a result code", respLen)
	}
	resp := make([]byte, respLen)
	if _, err := io.ReadFull(r, resp); err != nil {
		return 0, fmt.Errorf("read response: %w", err)
	}
	return binary.BigEndian.Uint32(resp), nil
}
