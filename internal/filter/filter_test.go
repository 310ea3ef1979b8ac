package filter

import (
	"fmt"
	"slices"
	"testing"

	"trustpool/internal/verdict"
)

// levels is a level function backed by a map; hosts it does not hold are
// Unknown, as a fail-closed verdict cache reads them.
func levels(m map[string]verdict.Level) func(string) verdict.Level {
	return func(h string) verdict.Level {
		if l, ok := m[h]; ok {
			return l
		}
		return verdict.Unknown
	}
}

func TestFilterMatrix(t *testing.T) {
	fleet := map[string]verdict.Level{
		"t1":                    verdict.Trusted,
		"u1":                    verdict.Untrusted,
		"k1":                    verdict.Unknown,
		"t2.rack1.example.com":  verdict.Trusted,
		"weird":                 verdict.Level("pending"), // OAT 1.x level: read as unknown
		"empty":                 verdict.Level(""),
		"TRUSTED-case-in-level": verdict.Level("Trusted"), // not a valid level: read as unknown
	}
	all := []string{"t1", "u1", "k1", "t2.rack1.example.com", "weird", "empty", "TRUSTED-case-in-level", "never-seen"}

	tests := []struct {
		name  string
		specs map[string]string
		want  []string
	}{
		{"no specs", nil, all},
		{"other keys only", map[string]string{"hw:cpu_policy": "dedicated", "trust:other": "trusted"}, all},
		{"trusted", map[string]string{ExtraSpec: "trusted"}, []string{"t1", "t2.rack1.example.com"}},
		{"untrusted", map[string]string{ExtraSpec: "untrusted"}, []string{"u1"}},
		{"unknown matches only unknown hosts, as in Nova", map[string]string{ExtraSpec: "unknown"},
			[]string{"k1", "weird", "empty", "TRUSTED-case-in-level", "never-seen"}},
		{"case differs", map[string]string{ExtraSpec: "Trusted"}, nil},
		{"upper case", map[string]string{ExtraSpec: "TRUSTED"}, nil},
		{"trailing space", map[string]string{ExtraSpec: "trusted "}, nil},
		{"empty value fails closed", map[string]string{ExtraSpec: ""}, nil},
		{"OAT level name", map[string]string{ExtraSpec: "pending"}, nil},
		{"boolean-ish", map[string]string{ExtraSpec: "true"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			level := func(h string) verdict.Level { calls++; return levels(fleet)(h) }
			pass, rejected := Filter(tt.specs, all, level)
			if !slices.Equal(pass, tt.want) {
				t.Errorf("pass = %q, want %q", pass, tt.want)
			}
			if len(pass)+len(rejected) != len(all) {
				t.Fatalf("%d passed + %d rejected != %d candidates", len(pass), len(rejected), len(all))
			}
			for _, r := range rejected {
				if slices.Contains(pass, r.Host) {
					t.Errorf("%q both passed and rejected", r.Host)
				}
				if r.Reason == "" {
					t.Errorf("%q rejected without a reason", r.Host)
				}
			}
			if _, ok := tt.specs[ExtraSpec]; !ok && calls != 0 {
				t.Errorf("level called %d times without a trust requirement", calls)
			}
		})
	}
}

func TestFilterReasons(t *testing.T) {
	fleet := levels(map[string]verdict.Level{"t": verdict.Trusted, "u": verdict.Untrusted})
	tests := []struct {
		wanted, host, reason string
	}{
		{"trusted", "k", "level unknown (never attested / expired), flavor wants trusted"},
		{"untrusted", "k", "level unknown (never attested / expired), flavor wants untrusted"},
		{"trusted", "u", "level untrusted (latest evidence failed verification or policy), flavor wants trusted"},
		{"unknown", "u", "level untrusted (latest evidence failed verification or policy), flavor wants unknown"},
		{"untrusted", "t", "level trusted, flavor wants untrusted"},
		{"unknown", "t", "level trusted, flavor wants unknown"},
		{"Trusted", "t", `flavor's trust:trusted_host="Trusted" is not one of "trusted", "untrusted", "unknown" (compared case-sensitively)`},
	}
	for _, tt := range tests {
		t.Run(tt.wanted+"/"+tt.host, func(t *testing.T) {
			pass, rejected := Filter(map[string]string{ExtraSpec: tt.wanted}, []string{tt.host}, fleet)
			if len(pass) != 0 || len(rejected) != 1 {
				t.Fatalf("pass=%q rejected=%v, want one rejection", pass, rejected)
			}
			if rejected[0] != (Rejection{Host: tt.host, Reason: tt.reason}) {
				t.Errorf("rejection = %+v, want reason %q", rejected[0], tt.reason)
			}
		})
	}
}

func TestFilterKeepsOrderAndDuplicates(t *testing.T) {
	fleet := levels(map[string]verdict.Level{"a": verdict.Trusted, "b": verdict.Trusted, "c": verdict.Untrusted})
	candidates := []string{"b", "c", "a", "b"}
	pass, rejected := Filter(map[string]string{ExtraSpec: "trusted"}, candidates, fleet)
	if want := []string{"b", "a", "b"}; !slices.Equal(pass, want) {
		t.Errorf("pass = %q, want %q", pass, want)
	}
	if len(rejected) != 1 || rejected[0].Host != "c" {
		t.Errorf("rejected = %v, want c", rejected)
	}
	// The result must not alias the caller's slice.
	pass, _ = Filter(nil, candidates, fleet)
	pass[0] = "changed"
	if candidates[0] != "b" {
		t.Error("Filter returned the caller's slice")
	}
}

func TestFilterEmptyCandidates(t *testing.T) {
	for _, specs := range []map[string]string{nil, {ExtraSpec: "trusted"}, {ExtraSpec: "bogus"}} {
		t.Run(fmt.Sprint(specs), func(t *testing.T) {
			pass, rejected := Filter(specs, nil, levels(nil))
			if len(pass) != 0 || len(rejected) != 0 {
				t.Errorf("pass=%q rejected=%v for no candidates", pass, rejected)
			}
		})
	}
}

func BenchmarkFilter1000(b *testing.B) {
	fleet := make(map[string]verdict.Level, 1000)
	candidates := make([]string, 1000)
	for i := range candidates {
		h := fmt.Sprintf("compute-%04d.rack%d.example.com", i, i%40)
		candidates[i] = h
		switch i % 10 {
		case 0:
			fleet[h] = verdict.Untrusted
		case 1: // never attested: absent from the map
		default:
			fleet[h] = verdict.Trusted
		}
	}
	level := levels(fleet)
	specs := map[string]string{ExtraSpec: "trusted"}
	b.ReportAllocs()
	for b.Loop() {
		pass, _ := Filter(specs, candidates, level)
		if len(pass) != 800 {
			b.Fatalf("%d passed, want 800", len(pass))
		}
	}
}
