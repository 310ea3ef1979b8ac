package server

import (
	"syscall"
	"testing"
)

func TestKeptAgentConns(t *testing.T) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		t.Fatal(err)
	}
	if got := keptAgentConns(-1); got != 0 {
		t.Errorf("keptAgentConns(-1) = %d, want 0: none kept", got)
	}
	if got := keptAgentConns(5); got != 5 {
		t.Errorf("keptAgentConns(5) = %d, want 5", got)
	}
	if got := keptAgentConns(0); got != min(DefaultAgentConns, got) || got <= 0 {
		t.Errorf("keptAgentConns(0) = %d, want the default %d (or the file limit's share)", got, DefaultAgentConns)
	}
	if got := keptAgentConns(1 << 30); uint64(got) >= l.Cur {
		t.Errorf("keptAgentConns(2^30) = %d, want below the open-file limit %d", got, l.Cur)
	}
}
