package nova

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// novaAttestation is Nova's side of PollHosts, ported to Go from
// nova/scheduler/filters/trusted_filter.py (AttestationService,
// ComputeAttestationCache, ComputeAttestation; Grizzly–Pike) so that tests
// check the answer exactly as Nova consumed it. Where Nova would raise and
// crash the scheduler (non-JSON 2xx body, an entry missing a key), the port
// returns an error; where Nova quietly degrades (non-2xx, connection error,
// unparsable vtime) it degrades the same way.
type novaAttestation struct {
	client   *http.Client
	base     string // "https://" + attestation_server + ":" + attestation_port + attestation_api_url
	authBlob string
	timeout  time.Duration // attestation_auth_timeout
	now      func() time.Time
	nodes    map[string]novaEntry // compute_nodes
	polls    int                  // PollHosts requests made
}

type novaEntry struct {
	level string
	vtime time.Time
}

// newNovaAttestation starts, as Nova did, with a cache entry for every
// compute node it knows.
func newNovaAttestation(client *http.Client, base, authBlob string, now func() time.Time, hosts ...string) *novaAttestation {
	n := &novaAttestation{client: client, base: base, authBlob: authBlob, timeout: 60 * time.Second, now: now, nodes: map[string]novaEntry{}}
	for _, h := range hosts {
		n.initEntry(h)
	}
	return n
}

func (n *novaAttestation) initEntry(host string) {
	n.nodes[host] = novaEntry{level: "unknown", vtime: time.Unix(0, 0).UTC()}
}

// doRequest is _request + _do_request: status 200/201/202/204 means the body
// is JSON-decoded (a decode failure crashes Nova); anything else yields nil.
func (n *novaAttestation) doRequest(hosts []string) (any, error) {
	body, err := json.Marshal(map[string]any{"count": len(hosts), "hosts": hosts})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, n.base+"/PollHosts", strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set("Accept", "application/json")
	if n.authBlob != "" {
		req.Header.Set("x-auth-blob", n.authBlob)
	}
	n.polls++
	res, err := n.client.Do(req)
	if err != nil {
		return nil, nil // IOError: every host stays unknown
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, nil
	}
	switch res.StatusCode {
	case 200, 201, 202, 204:
	default:
		return nil, nil
	}
	var data any
	if err := json.Unmarshal(raw, &data); err != nil {
		return nil, fmt.Errorf("nova crashes: jsonutils.loads(%q): %w", raw, err)
	}
	return data, nil
}

// doAttestation is do_attestation: data.get('hosts').
func (n *novaAttestation) doAttestation(hosts []string) ([]any, error) {
	data, err := n.doRequest(hosts)
	if err != nil || data == nil {
		return nil, err
	}
	obj, ok := data.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("nova crashes: %T has no .get", data)
	}
	states, ok := obj["hosts"]
	if !ok || states == nil {
		return nil, nil
	}
	list, ok := states.([]any)
	if !ok {
		return nil, fmt.Errorf("nova crashes iterating hosts of type %T", states)
	}
	return list, nil
}

// updateCacheEntry is _update_cache_entry: the three keys are indexed
// directly; an unparsable vtime makes the host unknown as of now.
func (n *novaAttestation) updateCacheEntry(state any) error {
	m, ok := state.(map[string]any)
	if !ok {
		return fmt.Errorf("nova crashes indexing %T", state)
	}
	var vals [3]string
	for i, key := range []string{"host_name", "trust_lvl", "vtime"} {
		v, ok := m[key]
		if !ok {
			return fmt.Errorf("nova crashes: KeyError %q in %v", key, m)
		}
		if vals[i], ok = v.(string); !ok {
			return fmt.Errorf("nova: %s is %T, not a string", key, v)
		}
	}
	entry := novaEntry{level: vals[1]}
	vt, err := parseNovaTime(vals[2])
	if err != nil {
		entry = novaEntry{level: "unknown", vtime: n.now().UTC()}
	} else {
		entry.vtime = vt
	}
	n.nodes[vals[0]] = entry
	return nil
}

// parseNovaTime accepts what timeutils.parse_isotime (iso8601.parse_date)
// accepted, falling back to the C-locale %c form (Juno+). Naive times are UTC.
func parseNovaTime(s string) (time.Time, error) {
	layouts := []string{
		time.RFC3339Nano,
		"2006-01-02T15:04:05.999999999Z0700",
		"2006-01-02T15:04:05.999999999",
		"2006-01-02 15:04:05.999999999Z07:00",
		"2006-01-02 15:04:05.999999999",
		"Mon Jan _2 15:04:05 2006", // %c
	}
	for _, l := range layouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("unparsable vtime %q", s)
}

func (n *novaAttestation) cacheValid(host string) bool {
	e, ok := n.nodes[host]
	return ok && n.now().UTC().Sub(e.vtime) <= n.timeout
}

// updateCache is _update_cache: invalidate everything, poll every known host.
func (n *novaAttestation) updateCache() error {
	hosts := make([]string, 0, len(n.nodes))
	for h := range n.nodes {
		n.initEntry(h)
		hosts = append(hosts, h)
	}
	states, err := n.doAttestation(hosts)
	if err != nil {
		return err
	}
	for _, s := range states {
		if err := n.updateCacheEntry(s); err != nil {
			return err
		}
	}
	return nil
}

// level is get_host_attestation.
func (n *novaAttestation) level(host string) (string, error) {
	if _, ok := n.nodes[host]; !ok {
		n.initEntry(host)
	}
	if !n.cacheValid(host) {
		if err := n.updateCache(); err != nil {
			return "", err
		}
	}
	return n.nodes[host].level, nil
}

// hostPasses is TrustedFilter.host_passes with is_trusted: no (or an empty)
// trust:trusted_host passes; otherwise exact string equality.
func (n *novaAttestation) hostPasses(host, trust string) (bool, error) {
	if trust == "" {
		return true, nil
	}
	level, err := n.level(host)
	return trust == level, err
}
