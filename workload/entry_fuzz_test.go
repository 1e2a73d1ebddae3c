package workload

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

// FuzzParseEntry hands ParseEntry what may be given to --workload: it
// reads an entry or says why not (ErrEntry), never panics, and what it
// reads it writes back as an entry it reads the same, which New takes.
func FuzzParseEntry(f *testing.F) {
	for _, s := range []string{
		"uid:1000=spiffe://example.org/agent/planner",
		"gid:0=spiffe://example.org/agent/a",
		"unix:uid:007,unix:user:alice=spiffe://example.org/agent/a",
		"user:alice,group:agents,gid:5=spiffe://example.org/agent/a",
		"uid:1,uid:1=spiffe://example.org/agent/a",
		"uid:1,=spiffe://example.org/agent/a",
		"user:a=b=spiffe://example.org/agent/a",
		"uid:1=spiffe://example.org/node/join/0123456789abcdef",
		"group:\u00e9quipe=spiffe://example.org/agent/a",
		"user:\xff=spiffe://example.org/agent/a",
		"uid:1000,path:/opt/agents/planner=spiffe://example.org/agent/planner",
		"path:/opt/a=b/../c,sha256:" + strings.Repeat("0F", 32) + "=spiffe://example.org/agent/a",
		"gid:3,path:/opt/a=b/../c,sha256:" + strings.Repeat("0F", 32) + "=spiffe://example.org/agent/a",
		"supplementary_gid:1,supplementary_gid:2,supplementary_group:wheel=spiffe://example.org/agent/a",
		"cgroup:/system.slice/nginx.service,systemd_unit:nginx.service=spiffe://example.org/agent/a",
		"uid:0,container_id:" + strings.Repeat("aB", 32) + ",pod_uid:0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0=spiffe://example.org/agent/a",
		"systemd_unit:a\\x2db.service=spiffe://example.org/agent/a",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEntry(s)
		if err != nil {
			if !errors.Is(err, ErrEntry) {
				t.Fatalf("ParseEntry(%q) = %v, not ErrEntry", s, err)
			}
			return
		}
		if len(e.Selectors) == 0 || len(e.Selectors) > maxSelectors {
			t.Fatalf("ParseEntry(%q) read %d selectors", s, len(e.Selectors))
		}
		again, err := ParseEntry(e.String())
		if err != nil || again.ID != e.ID || !slices.Equal(again.Selectors, e.Selectors) {
			t.Fatalf("ParseEntry(%q) = %v, written %q, read again as %v, %v", s, e, e.String(), again, err)
		}
		if _, err := New([]Entry{e}, &issuer{}, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatalf("New(%v) = %v", e, err)
		}
	})
}
