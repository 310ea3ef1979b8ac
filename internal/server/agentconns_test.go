package server

import (
	"syscall"
	"testing"
	"time"

	"trustpool/internal/integrity"
)

func TestKeptAgentConns(t *testing.T) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		t.Fatal(err)
	}
	if got := keptAgentConns(-1, time.Minute); got != 0 {
		t.Errorf("keptAgentConns(-1, time.Minute) = %d, want 0: none kept", got)
	}
	if got := keptAgentConns(5, time.Minute); got != 5 {
		t.Errorf("keptAgentConns(5, time.Minute) = %d, want 5", got)
	}
	if got := keptAgentConns(0, 0); got <= 0 {
		t.Errorf("keptAgentConns(0, 0) = %d, want some kept at the default interval", got)
	}
	if got := keptAgentConns(5, integrity.MaxConnIdle); got != 0 {
		t.Errorf("keptAgentConns(5, %v) = %d, want 0: a connection kept a whole interval is too old to reuse", integrity.MaxConnIdle, got)
	}
	if got := keptAgentConns(0, time.Minute); got != min(DefaultAgentConns, got) || got <= 0 {
		t.Errorf("keptAgentConns(0, time.Minute) = %d, want the default %d (or the file limit's share)", got, DefaultAgentConns)
	}
	if got := keptAgentConns(1<<30, time.Minute); uint64(got) >= l.Cur {
		t.Errorf("keptAgentConns(2^30) = %d, want below the open-file limit %d", got, l.Cur)
	}
}
