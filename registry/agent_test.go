package registry_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt/bolttest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func update(t *testing.T, s store.Store, fn func(store.Tx) error) error {
	t.Helper()
	return s.Update(context.Background(), fn)
}

func view(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.View(context.Background(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// validAgent returns a registration that passes Validate for td.
func validAgent(name string) *registry.Agent {
	return &registry.Agent{
		SPIFFEID:       "spiffe://example.org/agent/" + name,
		NodeIDs:        []string{"spiffe://example.org/node/join/abc"},
		Selectors:      []string{"level:token"},
		X509TTLSeconds: 3600,
		JWTTTLSeconds:  300,
		Scopes:         []string{"read"},
		Accountability: registry.Accountability{Operator: "ops", ModelProvider: "acme", Model: "m1", ResponsibleParty: "alice"},
	}
}

// newAgent returns a validated registration with an ID and timestamps, as
// the authority prepares it before CreateAgent.
func newAgent(t *testing.T, name string, at time.Time) *registry.Agent {
	t.Helper()
	a := validAgent(name)
	if err := a.Validate(td); err != nil {
		t.Fatalf("Validate(%s): %v", name, err)
	}
	a.ID = registry.NewID()
	a.CreatedAt, a.UpdatedAt = at, at
	return a
}

func TestAgentValidate(t *testing.T) {
	many := func(n int, f func(i int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	long := strings.Repeat("x", registry.MaxStringLen+1)
	tests := []struct {
		name   string
		mutate func(a *registry.Agent)
		ok     bool
	}{
		{"good", func(*registry.Agent) {}, true},
		{"good nested agent path", func(a *registry.Agent) { a.SPIFFEID = "spiffe://example.org/agent/team/bot" }, true},
		{"good zero ttls mean default", func(a *registry.Agent) { a.X509TTLSeconds, a.JWTTTLSeconds = 0, 0 }, true},
		{"good max ttl", func(a *registry.Agent) {
			a.X509TTLSeconds, a.JWTTTLSeconds = registry.MaxTTLSeconds, registry.MaxTTLSeconds
		}, true},
		{"good nil lists", func(a *registry.Agent) { a.NodeIDs, a.Selectors, a.Scopes = nil, nil, nil }, true},
		{"good max list length", func(a *registry.Agent) {
			a.Selectors = many(registry.MaxListLen, func(i int) string { return "s:" + string(rune('a'+i%26)) + strings.Repeat("y", i) })
		}, true},
		{"good max string length", func(a *registry.Agent) {
			a.Scopes = []string{strings.Repeat("s", registry.MaxStringLen)}
			a.Accountability.Operator = strings.Repeat("o", registry.MaxStringLen)
		}, true},
		{"empty spiffe id", func(a *registry.Agent) { a.SPIFFEID = "" }, false},
		{"not a spiffe id", func(a *registry.Agent) { a.SPIFFEID = "https://example.org/agent/x" }, false},
		{"other trust domain", func(a *registry.Agent) { a.SPIFFEID = "spiffe://other.org/agent/x" }, false},
		{"not under /agent/", func(a *registry.Agent) { a.SPIFFEID = "spiffe://example.org/node/x" }, false},
		{"bare /agent", func(a *registry.Agent) { a.SPIFFEID = "spiffe://example.org/agent" }, false},
		{"agentx prefix", func(a *registry.Agent) { a.SPIFFEID = "spiffe://example.org/agentx/y" }, false},
		{"trust domain only", func(a *registry.Agent) { a.SPIFFEID = "spiffe://example.org" }, false},
		{"node id unparsable", func(a *registry.Agent) { a.NodeIDs = []string{"not a spiffe id"} }, false},
		{"node id other trust domain", func(a *registry.Agent) { a.NodeIDs = []string{"spiffe://other.org/node/join/abc"} }, false},
		{"node id not under /node/", func(a *registry.Agent) { a.NodeIDs = []string{"spiffe://example.org/agent/abc"} }, false},
		{"node id empty", func(a *registry.Agent) { a.NodeIDs = []string{""} }, false},
		{"too many node ids", func(a *registry.Agent) {
			a.NodeIDs = many(registry.MaxListLen+1, func(i int) string { return "spiffe://example.org/node/n" + strings.Repeat("x", i) })
		}, false},
		{"negative x509 ttl", func(a *registry.Agent) { a.X509TTLSeconds = -1 }, false},
		{"negative jwt ttl", func(a *registry.Agent) { a.JWTTTLSeconds = -1 }, false},
		{"x509 ttl too long", func(a *registry.Agent) { a.X509TTLSeconds = registry.MaxTTLSeconds + 1 }, false},
		{"jwt ttl too long", func(a *registry.Agent) { a.JWTTTLSeconds = registry.MaxTTLSeconds + 1 }, false},
		{"too many selectors", func(a *registry.Agent) {
			a.Selectors = many(registry.MaxListLen+1, func(i int) string { return "s" + strings.Repeat("x", i) })
		}, false},
		{"too many scopes", func(a *registry.Agent) {
			a.Scopes = many(registry.MaxListLen+1, func(i int) string { return "s" + strings.Repeat("x", i) })
		}, false},
		{"empty selector", func(a *registry.Agent) { a.Selectors = []string{"a", ""} }, false},
		{"empty scope entry", func(a *registry.Agent) { a.Scopes = []string{""} }, false},
		{"over-long scope", func(a *registry.Agent) { a.Scopes = []string{long} }, false},
		{"a scope with a space", func(a *registry.Agent) { a.Scopes = []string{"files:read files:write"} }, false},
		{"a scope with a Unicode space", func(a *registry.Agent) { a.Scopes = []string{"files:read\u00a0files:write"} }, false},
		{"a scope that is not UTF-8", func(a *registry.Agent) { a.Scopes = []string{"files:\xff"} }, false},
		{"a scope with a zero-width space", func(a *registry.Agent) { a.Scopes = []string{"admin\u200b"} }, false},
		{"a scope with a control character", func(a *registry.Agent) { a.Scopes = []string{"admin\x01"} }, false},
		{"a selector with an escape", func(a *registry.Agent) { a.Selectors = []string{"level:\x1b[8mtoken"} }, false},
		{"an operator with a bidi override", func(a *registry.Agent) { a.Accountability.Operator = "team\u202eb" }, false},
		{"a responsible party not UTF-8", func(a *registry.Agent) { a.Accountability.ResponsibleParty = "\xff" }, false},
		{"good accountability in any script", func(a *registry.Agent) { a.Accountability.ResponsibleParty = "Zoë 山田 🙂" }, true},
		{"good names written with joiners", func(a *registry.Agent) {
			a.Accountability.ResponsibleParty, a.Accountability.Operator = "علی\u200cرضا", "👩\u200d💻 team"
		}, true},
		{"a scope with a joiner", func(a *registry.Agent) { a.Scopes = []string{"admin\u200d"} }, false},
		{"over-long selector", func(a *registry.Agent) { a.Selectors = []string{long} }, false},
		{"over-long operator", func(a *registry.Agent) { a.Accountability.Operator = long }, false},
		{"over-long model provider", func(a *registry.Agent) { a.Accountability.ModelProvider = long }, false},
		{"over-long model", func(a *registry.Agent) { a.Accountability.Model = long }, false},
		{"over-long responsible party", func(a *registry.Agent) { a.Accountability.ResponsibleParty = long }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := validAgent("bot")
			tt.mutate(a)
			err := a.Validate(td)
			if tt.ok && err != nil {
				t.Fatalf("Validate = %v, want nil", err)
			}
			if !tt.ok && !errors.Is(err, registry.ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestAgentValidateNormalises(t *testing.T) {
	tests := []struct {
		name                  string
		nodes, sels, scopes   []string
		wantN, wantSe, wantSc []string
	}{
		{
			name:   "nil becomes empty",
			wantN:  []string{},
			wantSe: []string{},
			wantSc: []string{},
		},
		{
			name:   "sorted and deduplicated",
			nodes:  []string{"spiffe://example.org/node/b", "spiffe://example.org/node/a", "spiffe://example.org/node/b"},
			sels:   []string{"z:1", "a:1", "z:1", "m:2", "a:1"},
			scopes: []string{"write", "read", "read"},
			wantN:  []string{"spiffe://example.org/node/a", "spiffe://example.org/node/b"},
			wantSe: []string{"a:1", "m:2", "z:1"},
			wantSc: []string{"read", "write"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := validAgent("bot")
			a.NodeIDs, a.Selectors, a.Scopes = tt.nodes, tt.sels, tt.scopes
			var callerSels []string
			if tt.sels != nil {
				callerSels = slices.Clone(tt.sels)
			}
			if err := a.Validate(td); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			for _, c := range []struct {
				field     string
				got, want []string
			}{{"node_ids", a.NodeIDs, tt.wantN}, {"selectors", a.Selectors, tt.wantSe}, {"scopes", a.Scopes, tt.wantSc}} {
				if c.got == nil {
					t.Errorf("%s = nil, want non-nil", c.field)
				}
				if !slices.Equal(c.got, c.want) {
					t.Errorf("%s = %q, want %q", c.field, c.got, c.want)
				}
			}
			if !slices.Equal(tt.sels, callerSels) {
				t.Errorf("Validate modified the caller's selector slice: %q, was %q", tt.sels, callerSels)
			}
		})
	}
}

func TestCheckAgentID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"spiffe://example.org/agent/a", true},
		{"spiffe://example.org/agent/a/b/c", true},
		{"spiffe://example.org/agent", false},
		{"spiffe://example.org/agents/a", false},
		{"spiffe://example.org/node/a", false},
		{"spiffe://example.com/agent/a", false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			err := registry.CheckAgentID(td, spiffeid.RequireFromString(tt.id))
			if tt.ok != (err == nil) {
				t.Fatalf("CheckAgentID(%s) = %v, want ok=%v", tt.id, err, tt.ok)
			}
			if err != nil && !errors.Is(err, registry.ErrInvalid) {
				t.Fatalf("CheckAgentID(%s) = %v, want ErrInvalid", tt.id, err)
			}
		})
	}
}

func TestAgentTTLs(t *testing.T) {
	a := &registry.Agent{X509TTLSeconds: 90, JWTTTLSeconds: 0}
	if got := a.X509TTL(); got != 90*time.Second {
		t.Errorf("X509TTL = %v, want 90s", got)
	}
	if got := a.JWTTTL(); got != 0 {
		t.Errorf("JWTTTL = %v, want 0", got)
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := registry.NewID()
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("NewID = %q, want 32 lowercase hex digits", id)
		}
		if seen[id] {
			t.Fatalf("NewID repeated %q", id)
		}
		seen[id] = true
	}
}

func sameAgent(t *testing.T, got, want *registry.Agent) {
	t.Helper()
	if got.ID != want.ID || got.SPIFFEID != want.SPIFFEID ||
		!slices.Equal(got.NodeIDs, want.NodeIDs) || !slices.Equal(got.Selectors, want.Selectors) ||
		!slices.Equal(got.Scopes, want.Scopes) || got.X509TTLSeconds != want.X509TTLSeconds ||
		got.JWTTTLSeconds != want.JWTTTLSeconds || got.Accountability != want.Accountability ||
		!got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Fatalf("agent = %+v\nwant    %+v", got, want)
	}
}

func TestAgentCRUD(t *testing.T) {
	s := bolttest.Open(t)
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	a := newAgent(t, "alpha", t0)

	if err := update(t, s, func(tx store.Tx) error { return registry.CreateAgent(tx, a) }); err != nil {
		t.Fatalf("CreateAgent: %v", err)
	}
	view(t, s, func(tx store.Tx) error {
		got, err := registry.GetAgent(tx, a.ID)
		if err != nil {
			t.Fatalf("GetAgent: %v", err)
		}
		sameAgent(t, got, a)
		got, err = registry.AgentBySPIFFEID(tx, a.SPIFFEID)
		if err != nil {
			t.Fatalf("AgentBySPIFFEID: %v", err)
		}
		sameAgent(t, got, a)
		return nil
	})

	t.Run("duplicate create", func(t *testing.T) {
		dup := newAgent(t, "alpha", t0)
		err := update(t, s, func(tx store.Tx) error { return registry.CreateAgent(tx, dup) })
		if !errors.Is(err, registry.ErrAlreadyExists) {
			t.Fatalf("CreateAgent(duplicate) = %v, want ErrAlreadyExists", err)
		}
		view(t, s, func(tx store.Tx) error {
			if _, err := registry.GetAgent(tx, dup.ID); !errors.Is(err, registry.ErrNotFound) {
				t.Errorf("GetAgent(refused duplicate) = %v, want ErrNotFound", err)
			}
			return nil
		})
	})

	t.Run("update keeps creation time", func(t *testing.T) {
		t1 := t0.Add(time.Hour)
		upd := validAgent("alpha")
		upd.Scopes = []string{"admin"}
		if err := upd.Validate(td); err != nil {
			t.Fatal(err)
		}
		upd.ID, upd.UpdatedAt = a.ID, t1
		upd.CreatedAt = t1.Add(time.Hour) // must be ignored
		if err := update(t, s, func(tx store.Tx) error { return registry.UpdateAgent(tx, upd) }); err != nil {
			t.Fatalf("UpdateAgent: %v", err)
		}
		view(t, s, func(tx store.Tx) error {
			got, err := registry.GetAgent(tx, a.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !got.CreatedAt.Equal(t0) || !got.UpdatedAt.Equal(t1) {
				t.Errorf("times = %v / %v, want %v / %v", got.CreatedAt, got.UpdatedAt, t0, t1)
			}
			if !slices.Equal(got.Scopes, []string{"admin"}) {
				t.Errorf("scopes = %q, want [admin]", got.Scopes)
			}
			return nil
		})
	})

	t.Run("update unknown", func(t *testing.T) {
		ghost := newAgent(t, "ghost", t0)
		err := update(t, s, func(tx store.Tx) error { return registry.UpdateAgent(tx, ghost) })
		if !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("UpdateAgent(unknown) = %v, want ErrNotFound", err)
		}
	})

	beta := newAgent(t, "beta", t0)
	if err := update(t, s, func(tx store.Tx) error { return registry.CreateAgent(tx, beta) }); err != nil {
		t.Fatalf("CreateAgent(beta): %v", err)
	}

	t.Run("update to a taken spiffe id is refused and changes nothing", func(t *testing.T) {
		upd := newAgent(t, "beta", t0.Add(2*time.Hour))
		upd.ID = a.ID
		err := update(t, s, func(tx store.Tx) error { return registry.UpdateAgent(tx, upd) })
		if !errors.Is(err, registry.ErrAlreadyExists) {
			t.Fatalf("UpdateAgent(taken id) = %v, want ErrAlreadyExists", err)
		}
		view(t, s, func(tx store.Tx) error {
			got, err := registry.AgentBySPIFFEID(tx, "spiffe://example.org/agent/alpha")
			if err != nil || got.ID != a.ID {
				t.Errorf("AgentBySPIFFEID(alpha) = %v, %v; want agent %s", got, err, a.ID)
			}
			got, err = registry.AgentBySPIFFEID(tx, "spiffe://example.org/agent/beta")
			if err != nil || got.ID != beta.ID {
				t.Errorf("AgentBySPIFFEID(beta) = %v, %v; want agent %s", got, err, beta.ID)
			}
			return nil
		})
	})

	t.Run("changing the spiffe id frees the old one", func(t *testing.T) {
		upd := newAgent(t, "gamma", t0.Add(3*time.Hour))
		upd.ID = a.ID
		if err := update(t, s, func(tx store.Tx) error { return registry.UpdateAgent(tx, upd) }); err != nil {
			t.Fatalf("UpdateAgent(rename): %v", err)
		}
		view(t, s, func(tx store.Tx) error {
			if _, err := registry.AgentBySPIFFEID(tx, "spiffe://example.org/agent/alpha"); !errors.Is(err, registry.ErrNotFound) {
				t.Errorf("AgentBySPIFFEID(old) = %v, want ErrNotFound", err)
			}
			got, err := registry.AgentBySPIFFEID(tx, "spiffe://example.org/agent/gamma")
			if err != nil || got.ID != a.ID {
				t.Fatalf("AgentBySPIFFEID(new) = %v, %v; want agent %s", got, err, a.ID)
			}
			if !got.CreatedAt.Equal(t0) {
				t.Errorf("CreatedAt = %v, want %v (kept across rename)", got.CreatedAt, t0)
			}
			return nil
		})
		// The old ID can be registered again.
		again := newAgent(t, "alpha", t0)
		if err := update(t, s, func(tx store.Tx) error { return registry.CreateAgent(tx, again) }); err != nil {
			t.Fatalf("CreateAgent(freed id): %v", err)
		}
	})

	t.Run("list ordered by spiffe id", func(t *testing.T) {
		view(t, s, func(tx store.Tx) error {
			list, err := registry.ListAgents(tx)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, a := range list {
				ids = append(ids, a.SPIFFEID)
			}
			want := []string{"spiffe://example.org/agent/alpha", "spiffe://example.org/agent/beta", "spiffe://example.org/agent/gamma"}
			if !slices.Equal(ids, want) {
				t.Fatalf("ListAgents = %q, want %q", ids, want)
			}
			return nil
		})
	})

	t.Run("each agent once, as listed", func(t *testing.T) {
		view(t, s, func(tx store.Tx) error {
			list, err := registry.ListAgents(tx)
			if err != nil {
				t.Fatal(err)
			}
			var each []*registry.Agent
			if err := registry.EachAgent(tx, func(a *registry.Agent) error { each = append(each, a); return nil }); err != nil {
				t.Fatal(err)
			}
			bySPIFFEID := func(a, b *registry.Agent) int { return strings.Compare(a.SPIFFEID, b.SPIFFEID) }
			slices.SortFunc(each, bySPIFFEID)
			if !reflect.DeepEqual(each, list) {
				t.Errorf("EachAgent gave %v; ListAgents %v", each, list)
			}
			stop := errors.New("stop")
			calls := 0
			if err := registry.EachAgent(tx, func(*registry.Agent) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
				t.Errorf("EachAgent with fn failing = %v after %d calls; want fn's error after 1", err, calls)
			}
			return nil
		})
	})

	t.Run("delete", func(t *testing.T) {
		var deleted *registry.Agent
		err := update(t, s, func(tx store.Tx) error {
			var err error
			deleted, err = registry.DeleteAgent(tx, beta.ID)
			return err
		})
		if err != nil {
			t.Fatalf("DeleteAgent: %v", err)
		}
		if deleted.ID != beta.ID || deleted.SPIFFEID != beta.SPIFFEID {
			t.Errorf("DeleteAgent returned %+v, want beta", deleted)
		}
		view(t, s, func(tx store.Tx) error {
			if _, err := registry.GetAgent(tx, beta.ID); !errors.Is(err, registry.ErrNotFound) {
				t.Errorf("GetAgent(deleted) = %v, want ErrNotFound", err)
			}
			if _, err := registry.AgentBySPIFFEID(tx, beta.SPIFFEID); !errors.Is(err, registry.ErrNotFound) {
				t.Errorf("AgentBySPIFFEID(deleted) = %v, want ErrNotFound", err)
			}
			list, err := registry.ListAgents(tx)
			if err != nil || len(list) != 2 {
				t.Errorf("ListAgents after delete = %d agents, %v; want 2", len(list), err)
			}
			return nil
		})
		err = update(t, s, func(tx store.Tx) error { _, err := registry.DeleteAgent(tx, beta.ID); return err })
		if !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("DeleteAgent(again) = %v, want ErrNotFound", err)
		}
	})
}

func TestAgentLookupsOnEmptyStore(t *testing.T) {
	s := bolttest.Open(t)
	view(t, s, func(tx store.Tx) error {
		if _, err := registry.GetAgent(tx, "nope"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("GetAgent = %v, want ErrNotFound", err)
		}
		if _, err := registry.AgentBySPIFFEID(tx, "spiffe://example.org/agent/nope"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("AgentBySPIFFEID = %v, want ErrNotFound", err)
		}
		list, err := registry.ListAgents(tx)
		if err != nil || list == nil || len(list) != 0 {
			t.Errorf("ListAgents = %v, %v; want empty non-nil", list, err)
		}
		if err := registry.EachAgent(tx, func(a *registry.Agent) error { return fmt.Errorf("called with %v", a) }); err != nil {
			t.Errorf("EachAgent = %v; want no call", err)
		}
		nodes, err := registry.ListNodes(tx)
		if err != nil || nodes == nil || len(nodes) != 0 {
			t.Errorf("ListNodes = %v, %v; want empty non-nil", nodes, err)
		}
		return nil
	})
}

func TestCreateAgentInViewIsReadOnly(t *testing.T) {
	s := bolttest.Open(t)
	a := newAgent(t, "ro", time.Now())
	err := s.View(context.Background(), func(tx store.Tx) error { return registry.CreateAgent(tx, a) })
	if !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("CreateAgent in View = %v, want ErrReadOnly", err)
	}
}
