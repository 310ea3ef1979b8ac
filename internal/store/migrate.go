package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// schemaFiles holds schema/<engine>/NNNN_name.sql: NNNN is the version the
// file brings the database to. Files are never edited once released; a
// change is a new file.
//
//go:embed schema
var schemaFiles embed.FS

// migration is one schema file.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations lists the engine's schema files in version order.
func migrations(engine string) ([]migration, error) {
	dir := path.Join("schema", engine)
	entries, err := fs.ReadDir(schemaFiles, dir)
	if err != nil {
		return nil, fmt.Errorf("read schema files: %w", err)
	}
	var ms []migration
	for _, e := range entries { // ReadDir sorts by name
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("schema file %s: name must be NNNN_name.sql", e.Name())
		}
		if v != len(ms)+1 {
			return nil, fmt.Errorf("schema file %s: version %d, want %d", e.Name(), v, len(ms)+1)
		}
		b, err := fs.ReadFile(schemaFiles, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read schema file: %w", err)
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	return ms, nil
}

// migrate brings the schema to the newest version in one transaction.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations(s.eng.name)
	if err != nil {
		return err
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if s.eng.migrationLock != "" {
			if _, err := tx.ExecContext(ctx, s.eng.migrationLock); err != nil {
				return fmt.Errorf("take migration lock: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version integer PRIMARY KEY, name text NOT NULL)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var have int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if have > len(ms) {
			return fmt.Errorf("database schema version %d is newer than this binary's %d", have, len(ms))
		}
		for _, m := range ms[have:] {
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("apply schema %s: %w", m.name, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
				return fmt.Errorf("record schema %s: %w", m.name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	return nil
}
