//go:build cgo

package hsm

import (
	"time"

	"github.com/ThalesGroup/crypto11"
)

// SetOpen has m open the token anew with open, and read the time from now.
func SetOpen(m *KeyManager, open func(*crypto11.Config) (*crypto11.Context, error), now func() time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.open, m.now = open, now
}
