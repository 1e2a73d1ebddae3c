package api

import (
	"fmt"
	"net/http"
	"strconv"
)

func (s *Server) auditCheckpoint(w http.ResponseWriter, r *http.Request) {
	cp, err := s.a.AuditCheckpoint(callerOf(r))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(cp)
}

func (s *Server) auditEntry(w http.ResponseWriter, r *http.Request) {
	index, err := parseUint(r.PathValue("index"), "index")
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	var size uint64
	if v := r.URL.Query().Get("tree_size"); v != "" {
		if size, err = parseUint(v, "tree_size"); err != nil || size == 0 {
			writeError(w, r, s.log, fmt.Errorf("%w: tree_size must be a positive integer", errBadQuery))
			return
		}
	}
	out, err := s.a.ReadAuditEntry(r.Context(), callerOf(r), index, size)
	answer(w, r, s, http.StatusOK, out, err)
}

func (s *Server) auditConsistency(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from, err := parseUint(q.Get("from"), "from")
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	to, err := parseUint(q.Get("to"), "to")
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out, err := s.a.AuditConsistency(r.Context(), callerOf(r), from, to)
	answer(w, r, s, http.StatusOK, out, err)
}

// parseUint reads a decimal unsigned integer parameter.
func parseUint(v, name string) (uint64, error) {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s must be an unsigned decimal integer", errBadQuery, name)
	}
	return n, nil
}
