package authority

import (
	"fmt"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// BenchmarkSyncNode is a node's sync of the 256 agents it serves (the
// most one sync asks), each registered on it: what every node running
// node run --workload-api asks every 30 s.
func BenchmarkSyncNode(b *testing.B) {
	a := startAuthority(b)
	ctx, td := b.Context(), a.td.IDString()
	nodeID := td + "/node/join/0123456789abcdef"
	ids := make([]string, MaxSyncIDs)
	if err := a.store.Update(ctx, func(tx store.Tx) error {
		if err := registry.PutNode(tx, &registry.Node{SPIFFEID: nodeID, AttestedAt: time.Now(), SVIDExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			return err
		}
		for i := range ids {
			ids[i] = fmt.Sprintf("%s/agent/a%d", td, i)
			if err := registry.CreateAgent(tx, &registry.Agent{ID: registry.NewID(), SPIFFEID: ids[i], NodeIDs: []string{nodeID}}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	node := &Caller{ID: spiffeid.RequireFromString(nodeID)}
	for b.Loop() {
		// Every sync as the first in a while: the hosting cache (a
		// second) holds nothing of the last one, 30 s before.
		a.hosting.invalidate()
		s, err := a.SyncNode(ctx, node, ids)
		if err != nil || len(s.Hosted) != len(ids) {
			b.Fatalf("SyncNode() = %d hosted, %v", len(s.Hosted), err)
		}
	}
}
