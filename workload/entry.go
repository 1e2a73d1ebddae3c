package workload

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Caller is the process on the other end of a connection, as the kernel
// says when it connects.
type Caller struct {
	PID      int32
	UID, GID uint32
}

// Selector picks callers by what the kernel says of them: "uid" (the
// process's user id) or "gid" (its primary group id).
type Selector struct {
	Kind  string
	Value uint32
}

// Matches reports whether c is one of the callers s picks.
func (s Selector) Matches(c Caller) bool {
	switch s.Kind {
	case "uid":
		return c.UID == s.Value
	case "gid":
		return c.GID == s.Value
	}
	return false
}

func (s Selector) String() string { return s.Kind + ":" + strconv.FormatUint(uint64(s.Value), 10) }

// Entry gives the callers its selector picks the identity ID.
type Entry struct {
	Selector Selector
	ID       spiffeid.ID
}

func (e Entry) String() string { return e.Selector.String() + "=" + e.ID.String() }

// ErrEntry is the error of an entry that is not well formed.
var ErrEntry = errors.New("workload entry")

// ParseEntry reads an entry written as SELECTOR=SPIFFE-ID, the selector
// being uid:N or gid:N (a decimal id): "uid:1000=spiffe://example.org/agent/planner".
func ParseEntry(s string) (Entry, error) {
	sel, id, ok := strings.Cut(s, "=")
	if !ok {
		return Entry{}, fmt.Errorf("%w %q: want SELECTOR=SPIFFE-ID, e.g. uid:1000=spiffe://example.org/agent/planner", ErrEntry, s)
	}
	kind, val, ok := strings.Cut(sel, ":")
	if !ok || (kind != "uid" && kind != "gid") {
		return Entry{}, fmt.Errorf("%w %q: the selector is uid:N or gid:N", ErrEntry, s)
	}
	n, err := strconv.ParseUint(val, 10, 32)
	if err != nil {
		return Entry{}, fmt.Errorf("%w %q: %s is not a decimal %s", ErrEntry, s, val, kind)
	}
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return Entry{}, fmt.Errorf("%w %q: %v", ErrEntry, s, err)
	}
	if err := checkAgentID(sid); err != nil {
		return Entry{}, fmt.Errorf("%w %q: %v", ErrEntry, s, err)
	}
	return Entry{Selector: Selector{Kind: kind, Value: uint32(n)}, ID: sid}, nil
}

// checkAgentID refuses an entry's identity that is not an agent's
// (spiffe://<trust domain>/agent/<name>). A node's own, above all,
// which the authority would renew for it: its caller would hold the
// node's credential, which obtains the SVIDs of every agent the node
// hosts, and the renewals would replace the node run's own.
func checkAgentID(id spiffeid.ID) error {
	if !strings.HasPrefix(id.Path(), "/agent/") {
		return fmt.Errorf("%s is not an agent's SPIFFE ID (spiffe://<trust domain>/agent/<name>)", id)
	}
	return nil
}
