package storetest

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"trustpool/internal/store"
)

func outboxTests() map[string]func(*testing.T, Opener) {
	const hold = time.Minute
	return map[string]func(*testing.T, Opener){
		"Lifecycle": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			now := store.Truncate(epoch())
			var ids []int64
			for i, due := range []time.Duration{0, -time.Second, time.Hour} {
				n := store.Notification{Target: fmt.Sprint("https://hook/", i), Body: []byte(fmt.Sprint(i)), CreatedAt: now.Add(-time.Minute)}
				n.NextAttempt = now.Add(due)
				id, err := s.Enqueue(ctx, n)
				must(t, "enqueue", err)
				ids = append(ids, id)
			}
			if ids[0] >= ids[1] || ids[1] >= ids[2] {
				t.Fatalf("IDs %v are not increasing", ids)
			}
			due, err := s.Due(ctx, now, hold, 10)
			must(t, "due", err)
			want := []store.Notification{
				{ID: ids[0], Target: "https://hook/0", Body: []byte("0"), NextAttempt: now.Add(hold), CreatedAt: now.Add(-time.Minute)},
				{ID: ids[1], Target: "https://hook/1", Body: []byte("1"), NextAttempt: now.Add(hold), CreatedAt: now.Add(-time.Minute)},
			}
			if !reflect.DeepEqual(due, want) {
				t.Fatalf("due = %+v\nwant %+v", due, want)
			}
			// Held: not handed out again until the hold ends.
			again, err := s.Due(ctx, now.Add(hold-time.Microsecond), hold, 10)
			must(t, "due while held", err)
			if len(again) != 0 {
				t.Fatalf("held notifications handed out again: %+v", again)
			}
			must(t, "delivered", s.MarkDelivered(ctx, ids[0]))
			must(t, "failed", s.MarkFailed(ctx, ids[1], now.Add(10*time.Minute), "503 Service Unavailable"))
			wantErr(t, "delivered twice", s.MarkDelivered(ctx, ids[0]), store.ErrNotFound)
			wantErr(t, "fail unknown", s.MarkFailed(ctx, ids[0], now, "x"), store.ErrNotFound)

			due, err = s.Due(ctx, now.Add(10*time.Minute), hold, 10)
			must(t, "due after retry time", err)
			if len(due) != 1 || due[0].ID != ids[1] || due[0].Attempts != 1 || due[0].LastError != "503 Service Unavailable" {
				t.Fatalf("retry = %+v, want notification %d with one failed attempt", due, ids[1])
			}
			// A deliverer that died: the hold ends and the notification is due again.
			due, err = s.Due(ctx, now.Add(10*time.Minute+hold), hold, 10)
			must(t, "due after hold", err)
			if len(due) != 1 || due[0].ID != ids[1] {
				t.Fatalf("after the hold = %+v, want notification %d again", due, ids[1])
			}
		},
		"DueAtCreation": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			id, err := s.Enqueue(ctx, store.Notification{Target: "t", CreatedAt: epoch()})
			must(t, "enqueue", err)
			due, err := s.Due(ctx, epoch(), hold, 10)
			must(t, "due", err)
			if len(due) != 1 || due[0].ID != id {
				t.Fatalf("due at creation = %+v", due)
			}
		},
		"Limit": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			for range 5 {
				_, err := s.Enqueue(ctx, store.Notification{Target: "t", CreatedAt: epoch()})
				must(t, "enqueue", err)
			}
			first, err := s.Due(ctx, epoch(), hold, 3)
			must(t, "due", err)
			rest, err := s.Due(ctx, epoch(), hold, 3)
			must(t, "due rest", err)
			if len(first) != 3 || len(rest) != 2 || first[2].ID >= rest[0].ID {
				t.Fatalf("pages %+v and %+v, want 3 then 2 in ID order", first, rest)
			}
		},
		"Errors": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			_, err := s.Enqueue(ctx, store.Notification{})
			wantErr(t, "enqueue without target", err, store.ErrInvalid)
			_, err = s.Due(ctx, epoch(), hold, 0)
			wantErr(t, "due with limit 0", err, store.ErrInvalid)
			_, err = s.Due(ctx, epoch(), 0, 1)
			wantErr(t, "due without hold", err, store.ErrInvalid)
		},
		"ConcurrentDue": func(t *testing.T, open Opener) {
			// Deliverers polling together each get distinct notifications.
			s, ctx := open(t), t.Context()
			const total = 40
			for range total {
				_, err := s.Enqueue(ctx, store.Notification{Target: "t", CreatedAt: epoch()})
				must(t, "enqueue", err)
			}
			got := make([][]store.Notification, 8)
			errs := race(len(got), func(i int) error {
				for {
					ns, err := s.Due(ctx, epoch(), hold, 3)
					if err != nil || len(ns) == 0 {
						return err
					}
					got[i] = append(got[i], ns...)
				}
			})
			seen := map[int64]bool{}
			for i, err := range errs {
				must(t, "due", err)
				for _, n := range got[i] {
					if seen[n.ID] {
						t.Fatalf("notification %d handed out twice", n.ID)
					}
					seen[n.ID] = true
				}
			}
			if len(seen) != total {
				t.Fatalf("%d notifications handed out, want %d", len(seen), total)
			}
		},
	}
}
