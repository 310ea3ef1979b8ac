package tpm

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// swtpm's data channel accepts two framings: a raw TPM command, or the
// Microsoft simulator's TPM_SEND_COMMAND header (what go-tpm's transport/tcp
// sends). We send raw commands, for three reasons:
//
//   - swtpm takes the locality of every framed command from its header, and
//     transport/tcp always says 0. That silently undoes the control channel's
//     CMD_SET_LOCALITY, so the TXT path (extending PCRs 17-22 at locality 3)
//     would be impossible. Raw commands run at the locality last set there.
//   - transport/tcp also dials a platform port, which for swtpm is the
//     control channel; swtpm serves one control client at a time, so holding
//     it would block every control command while the TPM is open.
//   - transport/tcp reads the response with a single Read, which TCP does not
//     promise to fill; readResponse reads the whole response.
//
// Nothing here goes through transport.ToReadWriter, whose Read returns
// (n, io.EOF) with the last bytes of a response: the TPM is reached only
// through transport.TPM's Send.

const (
	// headerSize is the size of a TPM 2.0 response header: tag, size, code.
	headerSize = 10
	// maxResponse bounds a response. TPM 2.0 responses are at most a few KiB
	// (libtpms: 4 KiB); the bound only stops a broken peer from making us
	// allocate up to 4 GiB.
	maxResponse = 64 << 10
	// commandTimeout bounds one command's round trip. Creating an RSA-2048
	// primary key is the slowest command we send; it takes seconds at most
	// on swtpm, so a minute means the peer is gone.
	commandTimeout = time.Minute
	dialTimeout    = 5 * time.Second
)

// swtpmConn is a transport.TPMCloser over swtpm's TCP data channel.
type swtpmConn struct {
	conn net.Conn
}

func dialSwtpm(hostport string) (*swtpmConn, error) {
	conn, err := net.DialTimeout("tcp", hostport, dialTimeout)
	if err != nil {
		return nil, fmt.Errorf("dial swtpm data channel: %w", err)
	}
	return &swtpmConn{conn: conn}, nil
}

// TPM_RC_RETRY: "the TPM was not able to start the command". libtpms answers
// it, for instance, to the first command that uses a freshly created RSA
// primary key. The command is sent again after a short wait.
const rcRetry = 0x922

// maxRetries bounds the resends of a command answered with TPM_RC_RETRY; the
// waits double from 1 ms, about 2 s in all, as tpmutil.RunCommandRaw does for
// the device and simulator transports.
const maxRetries = 11

// Send implements transport.TPM.
func (c *swtpmConn) Send(cmd []byte) ([]byte, error) {
	for i := 0; ; i++ {
		rsp, err := c.roundTrip(cmd)
		if err != nil || binary.BigEndian.Uint32(rsp[6:10]) != rcRetry || i == maxRetries {
			return rsp, err
		}
		time.Sleep(time.Millisecond << i)
	}
}

// roundTrip sends one command and reads its response.
func (c *swtpmConn) roundTrip(cmd []byte) ([]byte, error) {
	if err := c.conn.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return nil, fmt.Errorf("swtpm: set deadline: %w", err)
	}
	if _, err := c.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("swtpm: send command: %w", err)
	}
	rsp, err := readResponse(c.conn)
	if err != nil {
		return nil, fmt.Errorf("swtpm: %w", err)
	}
	return rsp, nil
}

// Close implements io.Closer.
func (c *swtpmConn) Close() error { return c.conn.Close() }

// readResponse reads one TPM response: the header, whose size field gives the
// length of the whole response, then the rest.
func readResponse(r io.Reader) ([]byte, error) {
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < headerSize || size > maxResponse {
		return nil, fmt.Errorf("response size %d out of range [%d, %d]", size, headerSize, maxResponse)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(r, rsp[headerSize:]); err != nil {
		return nil, fmt.Errorf("read response body (%d bytes): %w", size-headerSize, err)
	}
	return rsp, nil
}
