package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

func auditEntry(i int) store.Entry {
	return store.Entry{
		Time:    epoch().Add(time.Duration(i) * time.Second),
		Actor:   "admin",
		Action:  "reference.put",
		Subject: fmt.Sprintf("vmm-kvm@v%d", i),
		Detail:  []byte(fmt.Sprintf(`{"n":%d}`, i)),
	}
}

func auditTests() map[string]func(*testing.T, Opener) {
	return map[string]func(*testing.T, Opener){
		"AppendAndList": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			seq, head, err := s.AuditHead(ctx)
			must(t, "head of empty log", err)
			if seq != 0 || len(head) != 32 {
				t.Fatalf("empty head = %d, %x", seq, head)
			}
			var appended []store.Entry
			for i := range 5 {
				e := auditEntry(i)
				if i == 3 {
					e.Detail = nil
				}
				must(t, "append", s.Append(ctx, e))
				appended = append(appended, e)
			}
			all, err := s.ListAudit(ctx, 0, 100)
			must(t, "list", err)
			if len(all) != 5 {
				t.Fatalf("listed %d entries, want 5", len(all))
			}
			for i, e := range all {
				want := appended[i]
				want.Seq, want.Time, want.Hash = int64(i+1), store.Truncate(want.Time), e.Hash
				if len(e.Detail) == 0 {
					e.Detail = nil
				}
				if !reflect.DeepEqual(e, want) {
					t.Errorf("entry %d = %+v\nwant %+v", i, e, want)
				}
			}
			must(t, "verify", store.VerifyChain(all))
			seq, head, err = s.AuditHead(ctx)
			must(t, "head", err)
			if seq != 5 || !reflect.DeepEqual(head, all[4].Hash) {
				t.Fatalf("head = %d %x, want 5 %x", seq, head, all[4].Hash)
			}
			page, err := s.ListAudit(ctx, 2, 2)
			must(t, "page", err)
			if len(page) != 2 || page[0].Seq != 3 || page[1].Seq != 4 {
				t.Fatalf("page after 2 = %+v, want entries 3 and 4", page)
			}
			must(t, "verify page", store.VerifyChainAfter(all[1], page))
			// Tampering with what was read is detected.
			all[2].Subject = "vmm-evil@v1"
			var ce *store.ChainError
			if err := store.VerifyChain(all); !errors.As(err, &ce) || ce.Seq != 3 || ce.Fault != store.FaultChanged {
				t.Fatalf("tampered chain: %v", err)
			}
		},
		"Errors": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			for name, mutate := range map[string]func(*store.Entry){
				"no time":         func(e *store.Entry) { e.Time = time.Time{} },
				"no actor":        func(e *store.Entry) { e.Actor = "" },
				"no action":       func(e *store.Entry) { e.Action = "" },
				"detail not JSON": func(e *store.Entry) { e.Detail = []byte("{") },
			} {
				t.Run(name, func(t *testing.T) {
					e := auditEntry(1)
					mutate(&e)
					wantErr(t, "append", s.Append(ctx, e), store.ErrInvalid)
				})
			}
			_, err := s.ListAudit(ctx, 0, 0)
			wantErr(t, "list with limit 0", err, store.ErrInvalid)
			all, err := s.ListAudit(ctx, 0, 10)
			must(t, "list", err)
			if len(all) != 0 {
				t.Fatalf("refused entries were appended: %+v", all)
			}
		},
		"VersionsAuditedInTheirTransaction": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			e := auditEntry(1)
			e.Subject = ""
			r, err := s.PutReference(ctx, store.Reference{Name: "kvm", Class: "vmm", Body: []byte(`{}`), CreatedAt: epoch()}, e)
			must(t, "put reference", err)
			p, err := s.PutPolicy(ctx, store.Policy{Name: "default", Body: []byte(`{}`), CreatedAt: epoch()}, e)
			must(t, "put policy", err)
			got, err := s.ListAudit(ctx, 0, 10)
			must(t, "list", err)
			if len(got) != 2 || got[0].Subject != fmt.Sprintf("kvm@v%d", r.Version) || got[1].Subject != fmt.Sprintf("default@v%d", p.Version) {
				t.Fatalf("audit = %+v", got)
			}
			// A bad entry rolls the version back with it.
			bad := auditEntry(2)
			bad.Actor = ""
			_, err = s.PutReference(ctx, store.Reference{Name: "kvm", Class: "vmm", Body: []byte(`{}`), CreatedAt: epoch()}, bad)
			wantErr(t, "version with a bad audit entry", err, store.ErrInvalid)
			if latest, err := s.GetReference(ctx, "kvm", 0); err != nil || latest.Version != r.Version {
				t.Fatalf("after a refused entry the latest version is %d (%v), want %d", latest.Version, err, r.Version)
			}
		},
		"ConcurrentAppend": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			const writers, each = 8, 10
			errs := race(writers, func(w int) error {
				for i := range each {
					e := auditEntry(i)
					e.Actor = fmt.Sprint("writer-", w)
					if err := s.Append(ctx, e); err != nil {
						return err
					}
				}
				return nil
			})
			for _, err := range errs {
				must(t, "append", err)
			}
			all, err := s.ListAudit(ctx, 0, 1000)
			must(t, "list", err)
			if len(all) != writers*each {
				t.Fatalf("%d entries, want %d", len(all), writers*each)
			}
			must(t, "verify chain", store.VerifyChain(all))
			perWriter := map[string]int{}
			for _, e := range all {
				perWriter[e.Actor]++
			}
			for w := range writers {
				if n := perWriter[fmt.Sprint("writer-", w)]; n != each {
					t.Errorf("writer %d has %d entries, want %d", w, n, each)
				}
			}
		},
		"MixedFirstWrites": func(t *testing.T, open Opener) {
			// The first writes of a new store, of every kind at once, must
			// neither deadlock nor fail. The deadline turns a deadlock into
			// errors instead of a hung test.
			s := open(t)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			putHosts(t, s, "a", "b")
			errs := race(12, func(i int) error {
				switch i % 3 {
				case 0:
					_, err := s.PutVerdict(ctx, testVerdict("a", verdict.Trusted, i), testEvidence("a", "x", i))
					return err
				case 1:
					return s.Append(ctx, auditEntry(i))
				default:
					return putVerdicts(ctx, s, []verdict.Verdict{testVerdict("b", verdict.Untrusted, i)})
				}
			})
			for _, err := range errs {
				must(t, "write", err)
			}
		},
	}
}
