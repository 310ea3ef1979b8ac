package tpm

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"testing/iotest"
)

// response builds a TPM response with the given body and declared size.
func response(body []byte, size uint32) []byte {
	b := make([]byte, headerSize, headerSize+len(body))
	binary.BigEndian.PutUint16(b[0:2], 0x8001)
	binary.BigEndian.PutUint32(b[2:6], size)
	return append(b, body...)
}

func TestReadResponse(t *testing.T) {
	body := bytes.Repeat([]byte{0xab}, 300)
	full := response(body, uint32(headerSize+len(body)))
	tests := []struct {
		name    string
		r       io.Reader
		want    []byte
		wantErr bool
	}{
		{"whole", bytes.NewReader(full), full, false},
		{"one byte at a time", iotest.OneByteReader(bytes.NewReader(full)), full, false},
		{"header only", bytes.NewReader(response(nil, headerSize)), response(nil, headerSize), false},
		{"trailing bytes stay unread", bytes.NewReader(append(bytes.Clone(full), 1, 2, 3)), full, false},
		{"empty", bytes.NewReader(nil), nil, true},
		{"short header", bytes.NewReader(full[:6]), nil, true},
		{"size below header", bytes.NewReader(response(nil, 9)), nil, true},
		{"size above limit", bytes.NewReader(response(nil, maxResponse+1)), nil, true},
		{"truncated body", bytes.NewReader(full[:100]), nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readResponse(tc.r)
			if (err != nil) != tc.wantErr {
				t.Fatalf("readResponse error = %v, wantErr %v", err, tc.wantErr)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("readResponse = %d bytes, want %d", len(got), len(tc.want))
			}
		})
	}
}

// FuzzReadResponse feeds arbitrary bytes from the data channel to the
// response reader: it must never panic, and what it returns must be exactly
// the declared response, a prefix of the input.
func FuzzReadResponse(f *testing.F) {
	f.Add(response([]byte{0, 0, 0, 0}, 14))
	f.Add(response(nil, headerSize))
	f.Add(response(nil, 0))
	f.Add(response(nil, 0xffffffff))
	f.Add([]byte{0x80, 0x01})
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := readResponse(bytes.NewReader(in))
		if err != nil {
			return
		}
		if len(got) < headerSize || len(got) > maxResponse || len(got) > len(in) {
			t.Fatalf("returned %d bytes from %d input bytes", len(got), len(in))
		}
		if int(binary.BigEndian.Uint32(got[2:6])) != len(got) || !bytes.Equal(got, in[:len(got)]) {
			t.Fatal("returned bytes are not the declared response")
		}
	})
}

// TestSwtpmConnFragmented sends a command to a fake data channel that
// answers in small pieces: Send must return the whole response.
func TestSwtpmConnFragmented(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	want := response(bytes.Repeat([]byte{7}, 2000), headerSize+2000)
	cmd := response([]byte{1, 2, 3, 4}, headerSize+4)
	served := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		got := make([]byte, len(cmd))
		if _, err := io.ReadFull(c, got); err != nil {
			served <- err
			return
		}
		for rest := want; len(rest) > 0; {
			n := min(7, len(rest))
			if _, err := c.Write(rest[:n]); err != nil {
				served <- err
				return
			}
			rest = rest[n:]
		}
		served <- nil
	}()
	conn, err := dialSwtpm(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got, err := conn.Send(cmd)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Send returned %d bytes, want %d", len(got), len(want))
	}
	if err := <-served; err != nil {
		t.Fatalf("fake swtpm: %v", err)
	}
}
