package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// HostState says whether an admitted host takes part in attestation. A
// host awaiting approval is not a host yet (see Pending).
type HostState string

// Host states.
const (
	// HostActive: attested on schedule; its verdict counts.
	HostActive HostState = "active"
	// HostDisabled: kept but not attested (maintenance, decommission).
	HostDisabled HostState = "disabled"
)

// Valid reports whether st is one of the states.
func (st HostState) Valid() bool {
	return st == HostActive || st == HostDisabled
}

// Host is an admitted compute node. EKPublic and AKPublic are TPM public
// areas; the AK is trusted for quotes because it passed credential
// activation against this EK at enrollment. AgentCert is the one
// certificate the server accepts for the host: admitting it again (a new
// AK or key) replaces it, and deleting the host revokes it.
type Host struct {
	Name      string
	State     HostState
	EKPublic  []byte
	EKCert    []byte // DER; empty when the TPM has none
	AKPublic  []byte
	AKName    []byte   // TPM name of the AK (hash algorithm + digest of AKPublic)
	URL       string   // the agent's https URL; empty for a push agent
	Mode      HostMode // how its agent is reached: pull (dialled at URL) or push
	AgentCert []byte   // PEM of the certificate issued to the agent, pinned
	Labels    map[string]string
	Policy    string // name of the policy the host is held to
	CreatedAt time.Time
	UpdatedAt time.Time
}

// EKHash is the key HostByEK looks hosts up by: SHA-256 of the EK public area.
func EKHash(ekPublic []byte) []byte {
	h := sha256.Sum256(ekPublic)
	return h[:]
}

const hostColumns = `name, state, ek_public, ek_cert, ak_public, ak_name, url, agent_cert, labels, policy, created_at, updated_at, mode`

// PutHost inserts h or replaces the host of that name. On replace,
// CreatedAt keeps its first value. An EK bound to another host is
// ErrConflict.
func (s *Store) PutHost(ctx context.Context, h Host) error {
	if h.Name == "" {
		return fmt.Errorf("put host: %w", invalid("empty host name"))
	}
	if !h.State.Valid() {
		return fmt.Errorf("put host %s: %w", h.Name, invalid("state %q", h.State))
	}
	labels, err := jsonOrNull(h.Labels, len(h.Labels) == 0)
	if err != nil {
		return fmt.Errorf("put host %s: encode labels: %w", h.Name, err)
	}
	var ekHash []byte
	if len(h.EKPublic) > 0 {
		ekHash = EKHash(h.EKPublic)
	}
	_, err = s.wdb.ExecContext(ctx, `INSERT INTO hosts (`+hostColumns+`, ek_hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
		ON CONFLICT (name) DO UPDATE SET
			state = excluded.state, ek_public = excluded.ek_public, ek_cert = excluded.ek_cert,
			ak_public = excluded.ak_public, ak_name = excluded.ak_name, url = excluded.url,
			agent_cert = excluded.agent_cert, labels = excluded.labels, policy = excluded.policy,
			updated_at = excluded.updated_at, mode = excluded.mode, ek_hash = excluded.ek_hash`,
		h.Name, string(h.State), h.EKPublic, h.EKCert, h.AKPublic, h.AKName, h.URL, h.AgentCert,
		labels, h.Policy, micros(h.CreatedAt), micros(h.UpdatedAt), string(h.Mode.orPull()), ekHash)
	if err != nil {
		return fmt.Errorf("put host %s: %w", h.Name, s.eng.classify(err))
	}
	return nil
}

// SetHostPolicy sets the named host's policy and labels and nothing else,
// so that an update racing a re-admission cannot put back an identity the
// admission replaced. ErrNotFound when there is no such host.
func (s *Store) SetHostPolicy(ctx context.Context, name, policy string, labels map[string]string, now time.Time) error {
	l, err := jsonOrNull(labels, len(labels) == 0)
	if err != nil {
		return fmt.Errorf("set policy of %s: encode labels: %w", name, err)
	}
	res, err := s.wdb.ExecContext(ctx, `UPDATE hosts SET policy = $1, labels = $2, updated_at = $3 WHERE name = $4`, policy, l, micros(now), name)
	if err == nil {
		err = mustAffect(res)
	}
	if err != nil {
		return fmt.Errorf("set policy of %s: %w", name, err)
	}
	return nil
}

// SetHostMode sets how the named host's agent is reached (an admin's
// switch) and nothing else. ErrNotFound when there is no such host.
func (s *Store) SetHostMode(ctx context.Context, name string, mode HostMode, now time.Time) error {
	if !mode.Valid() {
		return fmt.Errorf("set mode of %s: %w", name, invalid("mode %q", mode))
	}
	res, err := s.wdb.ExecContext(ctx, `UPDATE hosts SET mode = $1, updated_at = $2 WHERE name = $3`, string(mode), micros(now), name)
	if err == nil {
		err = mustAffect(res)
	}
	if err != nil {
		return fmt.Errorf("set mode of %s: %w", name, err)
	}
	return nil
}

// HostMode says who opens the attestation connection.
type HostMode string

// Host modes.
const (
	// ModePull: the server dials the agent at the host's URL.
	ModePull HostMode = "pull"
	// ModePush: the agent opens no port; it fetches challenges from the
	// server and posts its evidence.
	ModePush HostMode = "push"
)

// Valid reports whether m is a known mode.
func (m HostMode) Valid() bool { return m == ModePull || m == ModePush }

// orPull is m, or pull when unset (hosts written before modes existed).
func (m HostMode) orPull() HostMode {
	if m == "" {
		return ModePull
	}
	return m
}

// GetHost returns the named host or ErrNotFound.
func (s *Store) GetHost(ctx context.Context, name string) (Host, error) {
	h, err := scanHost(s.queryRow(ctx, s.rdb, `SELECT `+hostColumns+` FROM hosts WHERE name = $1`, name))
	if err != nil {
		return Host{}, fmt.Errorf("get host %s: %w", name, err)
	}
	return h, nil
}

// HostByEK returns the host whose EK public area hashes to ekHash (see
// EKHash), or ErrNotFound.
func (s *Store) HostByEK(ctx context.Context, ekHash []byte) (Host, error) {
	h, err := scanHost(s.rdb.QueryRowContext(ctx, `SELECT `+hostColumns+` FROM hosts WHERE ek_hash = $1`, ekHash))
	if err != nil {
		return Host{}, fmt.Errorf("host by EK %x: %w", ekHash, err)
	}
	return h, nil
}

// ListHosts returns every host, ordered by name.
func (s *Store) ListHosts(ctx context.Context) ([]Host, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+hostColumns+` FROM hosts ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	hs, err := collect(rows, func(r scanner) (Host, error) { return scanHost(r) })
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return hs, nil
}

// DeleteHost removes the host with its verdicts, evidence, history and
// lease, or returns ErrNotFound.
func (s *Store) DeleteHost(ctx context.Context, name string) error {
	res, err := s.wdb.ExecContext(ctx, `DELETE FROM hosts WHERE name = $1`, name)
	if err == nil {
		err = mustAffect(res)
	}
	if err != nil {
		return fmt.Errorf("delete host %s: %w", name, err)
	}
	return nil
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// scanHost reads a row of hostColumns, then the more columns after them.
func scanHost(r scanner, more ...any) (Host, error) {
	var (
		h                Host
		state, mode      string
		labels           sql.NullString
		created, updated int64
	)
	err := r.Scan(append([]any{&h.Name, &state, &h.EKPublic, &h.EKCert, &h.AKPublic, &h.AKName, &h.URL,
		&h.AgentCert, &labels, &h.Policy, &created, &updated, &mode}, more...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return Host{}, ErrNotFound
	}
	if err != nil {
		return Host{}, err
	}
	h.State, h.Mode = HostState(state), HostMode(mode)
	h.CreatedAt, h.UpdatedAt = fromMicros(created), fromMicros(updated)
	if labels.Valid {
		if err := json.Unmarshal([]byte(labels.String), &h.Labels); err != nil {
			return Host{}, fmt.Errorf("decode labels of %s: %w", h.Name, err)
		}
	}
	return h, nil
}

// jsonOrNull encodes v as a JSON string, or returns nil (SQL NULL) when
// empty is true.
func jsonOrNull(v any, empty bool) (any, error) {
	if empty {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}
