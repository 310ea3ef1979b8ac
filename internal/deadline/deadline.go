// Package deadline is a queue of keys by time, at most one entry a key:
// what the recorder expires and the integrity service attests next. Finding
// what is due costs only what is due; it is not safe for concurrent use
// (its users hold their own lock).
package deadline

import (
	"container/heap"
	"time"
)

// Item is a key due at At, with its value.
type Item[V any] struct {
	Key   string
	At    time.Time
	Value V
	index int
}

// Queue holds at most one Item per key, earliest first.
type Queue[V any] struct {
	h     items[V]
	byKey map[string]*Item[V]
}

// New returns an empty queue.
func New[V any]() *Queue[V] { return &Queue[V]{byKey: map[string]*Item[V]{}} }

// Set makes key due at at with v, replacing its entry.
func (q *Queue[V]) Set(key string, at time.Time, v V) {
	if it := q.byKey[key]; it != nil {
		it.At, it.Value = at, v
		heap.Fix(&q.h, it.index)
		return
	}
	it := &Item[V]{Key: key, At: at, Value: v}
	q.byKey[key] = it
	heap.Push(&q.h, it)
}

// Has reports whether key is queued.
func (q *Queue[V]) Has(key string) bool { return q.byKey[key] != nil }

// Remove drops key's entry, if any.
func (q *Queue[V]) Remove(key string) {
	if it := q.byKey[key]; it != nil {
		heap.Remove(&q.h, it.index)
		delete(q.byKey, key)
	}
}

// Next returns the earliest entry without taking it.
func (q *Queue[V]) Next() (Item[V], bool) {
	if len(q.h) == 0 {
		return Item[V]{}, false
	}
	return *q.h[0], true
}

// Pop takes out the earliest entry if it is due at now.
func (q *Queue[V]) Pop(now time.Time) (Item[V], bool) {
	if len(q.h) == 0 || q.h[0].At.After(now) {
		return Item[V]{}, false
	}
	it := heap.Pop(&q.h).(*Item[V])
	delete(q.byKey, it.Key)
	return *it, true
}

// Keys calls f with every queued key.
func (q *Queue[V]) Keys(f func(key string)) {
	for _, it := range q.h {
		f(it.Key)
	}
}

// CountBefore counts the entries due before t.
func (q *Queue[V]) CountBefore(t time.Time) int {
	n := 0
	for _, it := range q.h {
		if it.At.Before(t) {
			n++
		}
	}
	return n
}

// Len is the number of entries.
func (q *Queue[V]) Len() int { return len(q.h) }

type items[V any] []*Item[V]

func (h items[V]) Len() int           { return len(h) }
func (h items[V]) Less(i, j int) bool { return h[i].At.Before(h[j].At) }
func (h items[V]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *items[V]) Push(x any) {
	it := x.(*Item[V])
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *items[V]) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}
