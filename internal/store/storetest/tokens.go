package storetest

import (
	"reflect"
	"testing"
	"time"

	"trustpool/internal/store"
)

func apiTokenTests() map[string]func(*testing.T, Opener) {
	return map[string]func(*testing.T, Opener){
		"Lifecycle": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			ci := store.Token{Hash: tokenHash("ci"), Name: "ci", Role: "admin", CreatedAt: store.Truncate(epoch())}
			nova := store.Token{Hash: tokenHash("nova"), Name: "nova", Role: "scheduler", CreatedAt: store.Truncate(epoch())}
			must(t, "create nova", s.CreateToken(ctx, nova))
			must(t, "create ci", s.CreateToken(ctx, ci))
			got, err := s.TokenByHash(ctx, ci.Hash)
			must(t, "by hash", err)
			if !reflect.DeepEqual(got, ci) || got.Revoked() {
				t.Fatalf("by hash = %+v, want %+v unrevoked", got, ci)
			}
			at := epoch().Add(time.Hour)
			must(t, "revoke", s.RevokeToken(ctx, "ci", at))
			must(t, "revoke again later", s.RevokeToken(ctx, "ci", at.Add(time.Hour)))
			got, err = s.TokenByHash(ctx, ci.Hash)
			must(t, "by hash after revoke", err)
			if !got.Revoked() || !got.RevokedAt.Equal(store.Truncate(at)) {
				t.Fatalf("revoked token = %+v, want revoked at %v (the first revocation)", got, at)
			}
			list, err := s.ListTokens(ctx)
			must(t, "list", err)
			ci.RevokedAt = store.Truncate(at)
			if want := []store.Token{ci, nova}; !reflect.DeepEqual(list, want) {
				t.Fatalf("list = %+v\nwant %+v", list, want)
			}
		},
		"Errors": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			tok := store.Token{Hash: tokenHash("a"), Name: "a", Role: "reader", CreatedAt: epoch()}
			must(t, "create", s.CreateToken(ctx, tok))
			sameHash := tok
			sameHash.Name = "b"
			wantErr(t, "create with a used hash", s.CreateToken(ctx, sameHash), store.ErrConflict)
			sameName := tok
			sameName.Hash = tokenHash("b")
			wantErr(t, "create with a used name", s.CreateToken(ctx, sameName), store.ErrConflict)
			for name, bad := range map[string]store.Token{
				"no hash": {Name: "c", Role: "reader"},
				"no name": {Hash: tokenHash("c"), Role: "reader"},
				"no role": {Hash: tokenHash("c"), Name: "c"},
			} {
				t.Run(name, func(t *testing.T) {
					wantErr(t, "create", s.CreateToken(ctx, bad), store.ErrInvalid)
				})
			}
			_, err := s.TokenByHash(ctx, tokenHash("unknown"))
			wantErr(t, "by unknown hash", err, store.ErrNotFound)
			wantErr(t, "revoke unknown", s.RevokeToken(ctx, "unknown", epoch()), store.ErrNotFound)
			wantErr(t, "revoke at zero time", s.RevokeToken(ctx, "a", time.Time{}), store.ErrInvalid)
		},
	}
}
