package authority

import (
	"errors"
	"strings"
	"testing"

	"mandate.dev/mandate/registry"
)

// The delegation flow reuses the registrations and node records it read
// for a hop a moment before; a change an admin made since is seen by
// the next hop's decision at once, not only by its commit: the hop is
// refused for what changed (the policy's deny, the registration's
// refusal), not as changed while it was decided.
func TestNextHopSeesWhatChanged(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, p *hopParties)
		bound  bool
		want   func(err error) bool
	}{
		{"the node the hop is bound to banned", func(t *testing.T, p *hopParties) {
			if _, err := p.a.BanNode(t.Context(), p.admin, p.n2, "stolen"); err != nil {
				t.Fatal(err)
			}
		}, true, func(err error) bool {
			var pd *PolicyDenial
			return errors.As(err, &pd) && strings.Contains(strings.Join(pd.Decision.Reasons, "; "), "the delegatee's host is banned")
		}},
		{"the delegatee's registration no longer naming that node", func(t *testing.T, p *hopParties) {
			upd := updated(p.delegatee, func(ag *registry.Agent) { ag.NodeIDs = []string{p.n1} })
			if _, err := p.a.UpdateAgent(t.Context(), p.admin, p.delegatee.ID, upd); err != nil {
				t.Fatal(err)
			}
		}, true, func(err error) bool {
			return err != nil && strings.Contains(err.Error(), "a node its registration no longer lets it run on")
		}},
		{"the delegatee's registration deleted", func(t *testing.T, p *hopParties) {
			if err := p.a.DeleteAgent(t.Context(), p.admin, p.delegatee.ID); err != nil {
				t.Fatal(err)
			}
		}, false, func(err error) bool {
			return err != nil && strings.Contains(err.Error(), "is not a registered agent of this trust domain") &&
				!strings.Contains(err.Error(), "deleted as the hop was made")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newHopParties(t)
			hop := func() error {
				if tc.bound {
					return p.hop(t.Context(), p.delegatee.SPIFFEID, "alice", p.bound.Certificates)
				}
				return p.hop(t.Context(), p.delegatee.SPIFFEID, "alice", nil)
			}
			if err := hop(); err != nil {
				t.Fatal(err)
			}
			tc.change(t, p)
			err := hop()
			if errors.Is(err, ErrChangedMeanwhile) || !tc.want(err) {
				t.Fatalf("the next hop = %v, want it refused for what changed, when decided", err)
			}
		})
	}
}
