package fleet

import (
	"fmt"
	"syscall"

	"trustpool/internal/evidence"
)

// spareFiles are a process's files besides its nodes': its own clients,
// enrollments in flight.
const spareFiles = 2048

// FilesPerNode is how many files a node holds open: a pull node its
// listener and the server's kept-alive connection, a push node its one
// connection to the server.
func FilesPerNode(mode string) int {
	if mode == evidence.ModePush {
		return 1
	}
	return 2
}

// NodesPerProcess is how many nodes of mode one process holds with their
// connections kept alive under the hard open-file limit (which a process
// may raise its own limit to).
func NodesPerProcess(mode string) (int, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Max > 1<<24 { // unlimited, or as good as
		l.Max = 1 << 24
	}
	n := (int(l.Max) - spareFiles) / FilesPerNode(mode)
	if n <= 0 {
		return 0, fmt.Errorf("fleet: the open-file limit (%d) holds no node", l.Max)
	}
	return n, nil
}

// RaiseFileLimit makes sure this process may open the files nodes of mode
// need, raising its limit when it may, and reports whether pull nodes can
// keep the server's connections alive (false when only one file per node
// fits: each challenge's connection is then closed, Config.NoKeepAlive).
func RaiseFileLimit(nodes int, mode string) (keepAlive bool, err error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return false, err
	}
	want := uint64(FilesPerNode(mode)*nodes + spareFiles)
	if l.Cur < want {
		r := syscall.Rlimit{Cur: want, Max: max(l.Max, want)}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r) != nil && l.Max > l.Cur {
			r = syscall.Rlimit{Cur: l.Max, Max: l.Max}
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
		}
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	switch {
	case l.Cur >= want:
		return true, nil
	case mode != evidence.ModePush && l.Cur >= uint64(nodes+spareFiles):
		return false, nil
	}
	return false, fmt.Errorf("fleet: %d nodes need at least %d open files, the limit is %d (ulimit -n)", nodes, nodes+spareFiles, l.Cur)
}
