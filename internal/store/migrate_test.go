package store

import (
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
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
