package deadline

import (
	"testing"
	"time"
)

func TestQueue(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	q := New[int]()
	q.Set("c", t0.Add(3*time.Second), 3)
	q.Set("a", t0.Add(1*time.Second), 1)
	q.Set("b", t0.Add(2*time.Second), 2)
	q.Set("c", t0.Add(500*time.Millisecond), 30) // moved to the front
	if it, ok := q.Next(); !ok || it.Key != "c" || it.Value != 30 {
		t.Fatalf("next = %+v %v, want c", it, ok)
	}
	if _, ok := q.Pop(t0); ok {
		t.Fatal("popped before anything was due")
	}
	if n := q.CountBefore(t0.Add(1500 * time.Millisecond)); n != 2 {
		t.Fatalf("CountBefore = %d, want 2", n)
	}
	q.Remove("a")
	var got []string
	for {
		it, ok := q.Pop(t0.Add(time.Hour))
		if !ok {
			break
		}
		got = append(got, it.Key)
	}
	if len(got) != 2 || got[0] != "c" || got[1] != "b" || q.Len() != 0 || q.Has("b") {
		t.Fatalf("popped %v, left %d", got, q.Len())
	}
}
