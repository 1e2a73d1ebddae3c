package authority

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/store"
)

// stoppedStore is the authority's store once its data file is no longer
// used (a commit whose sync failed): every transaction fails.
type stoppedStore struct{ store.Store }

var errStopped = fmt.Errorf("store/bolt: %w: %w", store.ErrUnwritable, store.ErrNotDurable)

func (stoppedStore) Stopped() error                                     { return errStopped }
func (stoppedStore) View(context.Context, func(store.Tx) error) error   { return errStopped }
func (stoppedStore) Update(context.Context, func(store.Tx) error) error { return errStopped }

// A metrics reader that http.metrics_readers lists, an agent, still
// reads /metrics once the data file is no longer used, when the
// revocations cannot be read: that is when the metrics are most needed.
// Until then, its revocation is checked.
func TestMetricsReaderReadsWhenTheStoreStopped(t *testing.T) {
	const reader = "spiffe://org-a.example/agent/prometheus"
	a, stop := runAuthorityWith(t, Options{}, func(c *Config) { c.HTTP.MetricsReaders = []string{reader} })
	stop() // nothing else of the authority's uses its store while the test replaces it
	c := &Caller{ID: spiffeid.RequireFromString(reader)}
	if err := a.MayReadMetrics(t.Context(), c); err != nil {
		t.Fatalf("MayReadMetrics = %v, want nil", err)
	}
	live := a.store
	a.store = stoppedStore{live}
	defer func() { a.store = live }()
	if err := a.MayReadMetrics(t.Context(), c); err != nil {
		t.Errorf("MayReadMetrics once the store stopped = %v, want nil", err)
	}
	if err := a.MayReadMetrics(t.Context(), &Caller{ID: spiffeid.RequireFromString("spiffe://org-a.example/agent/other")}); !errors.Is(err, ErrForbidden) {
		t.Errorf("MayReadMetrics of a caller not listed, once the store stopped = %v, want ErrForbidden", err)
	}
}
