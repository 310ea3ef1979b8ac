package integrity

// Hold makes the service attest exactly hosts from now on: the hosts this
// replica holds leases on (package lease). Hosts it takes over are
// scheduled at once, spread over the coming interval.
func (s *Service) Hold(hosts []string) {
	set := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		set[h] = true
	}
	s.held.Store(&set)
	s.sched.keep(hosts)
	s.sched.signal()
}
