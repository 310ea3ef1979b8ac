package store

import (
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"trustpool/internal/verdict"
)

// TestSchemasInStep checks that both engines have the same schema versions
// and, in each version, the same tables and indexes.
func TestSchemasInStep(t *testing.T) {
	lite, err := migrations("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := migrations("postgres")
	if err != nil {
		t.Fatal(err)
	}
	if len(lite) == 0 || len(lite) != len(pg) {
		t.Fatalf("sqlite has %d schema versions, postgres %d", len(lite), len(pg))
	}
	objects := regexp.MustCompile(`(?i)CREATE (?:TABLE|INDEX) (\w+)`)
	names := func(sql string) []string {
		var ns []string
		for _, m := range objects.FindAllStringSubmatch(sql, -1) {
			ns = append(ns, strings.ToLower(m[1]))
		}
		slices.Sort(ns)
		return ns
	}
	for i := range lite {
		if lite[i].name != pg[i].name {
			t.Errorf("version %d: files %s and %s", i+1, lite[i].name, pg[i].name)
		}
		if a, b := names(lite[i].sql), names(pg[i].sql); !slices.Equal(a, b) {
			t.Errorf("version %d: sqlite creates %v, postgres %v", i+1, a, b)
		}
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "t.db")
	s, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	// A later binary migrated this database further.
	if _, err := s.wdb.Exec(`INSERT INTO schema_migrations (version, name) VALUES (999, '0999_future.sql')`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(t.Context(), dsn)
	if err == nil {
		s.Close()
		t.Fatal("opened a database with a newer schema")
	}
	if !strings.Contains(err.Error(), "newer") {
		t.Fatalf("error %v does not say the schema is newer", err)
	}
}

// TestEvidenceAfterUpgradeTo8: a database of version 7 keeps the latest
// verification in the evidence row; after migration 8 the evidence reads
// the same, and the next attestation measuring the same stores it in full
// once (no hash is known yet), then touches only the verdict row.
func TestEvidenceAfterUpgradeTo8(t *testing.T) {
	ctx := t.Context()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "t.db")
	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	at := Truncate(time.Unix(1_800_000_000, 0))
	h := Host{Name: "node1", State: HostActive, EKPublic: []byte("ek"), AKPublic: []byte("ak"), AKName: []byte{0, 11},
		URL: "https://node1:9443", Mode: ModePull, AgentCert: []byte("cert"), Policy: "default", CreatedAt: at, UpdatedAt: at}
	if err := s.AdmitHost(ctx, Admission{Host: h, Now: at}); err != nil {
		t.Fatal(err)
	}
	put := func(seq int64, quote string, verified time.Time) {
		t.Helper()
		v := verdict.Verdict{Host: "node1", Level: verdict.Trusted, VTime: verified, Expiry: verified.Add(time.Hour), Policy: "default@1", Seq: seq}
		ev := &EvidenceRecord{Host: "node1", Evidence: []byte(quote), Nonce: []byte("n-" + quote), Measurements: []byte("m"), VerifiedAt: verified}
		if _, err := s.PutVerdict(ctx, v, ev); err != nil {
			t.Fatal(err)
		}
	}
	put(1, "q1", at)
	// Back to version 7: the verdict row's columns gone, the evidence
	// row's time and number those of the latest verification.
	for _, stmt := range []string{
		`ALTER TABLE verdicts DROP COLUMN measurements_hash`,
		`ALTER TABLE verdicts DROP COLUMN evidence_at`,
		`ALTER TABLE verdicts DROP COLUMN evidence_seq`,
		`UPDATE evidence SET verified_at = verified_at + 60000000, seq = 2`,
		`DELETE FROM schema_migrations WHERE version = 8`,
	} {
		if _, err := s.wdb.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	s.Close()
	if s, err = Open(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check := func(when, quote string, verified time.Time, seq int64) {
		t.Helper()
		got, err := s.LatestEvidence(ctx, "node1")
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Evidence) != quote || !got.VerifiedAt.Equal(verified) || got.Seq != seq {
			t.Fatalf("%s: evidence %q verified at %v, seq %d; want %q, %v, %d", when, got.Evidence, got.VerifiedAt, got.Seq, quote, verified, seq)
		}
	}
	check("after the upgrade", "q1", at.Add(time.Minute), 2)
	put(3, "q3", at.Add(2*time.Minute))
	check("the first attestation after it", "q3", at.Add(2*time.Minute), 3)
	put(4, "q4", at.Add(3*time.Minute))
	check("the next, measuring the same", "q3", at.Add(3*time.Minute), 4)
}
