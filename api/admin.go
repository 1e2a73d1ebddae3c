package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/registry"
)

func (s *Server) createAgent(w http.ResponseWriter, r *http.Request) {
	var ag registry.Agent
	if err := decodeJSON(r, &ag); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out, err := s.a.CreateAgent(r.Context(), callerOf(r), &ag)
	answerAgent(w, r, s, http.StatusCreated, out, err)
}

// answerAgent answers a registration with its entity tag (ETag), which
// an update or a deletion may name in If-Match.
func answerAgent(w http.ResponseWriter, r *http.Request, s *Server, status int, ag *registry.Agent, err error) {
	if err == nil {
		w.Header().Set("ETag", authority.ETag(ag))
	}
	answer(w, r, s, status, ag, err)
}

// ifMatch is the condition of the request's If-Match, every field of
// it, if it has one (even empty: then it names no version).
func ifMatch(r *http.Request) []authority.IfMatch {
	v := r.Header.Values("If-Match")
	if len(v) == 0 {
		return nil
	}
	return []authority.IfMatch{authority.IfMatch(strings.Join(v, ", "))}
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request) {
	listed(w, r, s, "agents", s.a.ListAgents, func(a *registry.Agent) string { return a.SPIFFEID })
}

// maxListPage bounds a page of an admin list.
const maxListPage = 500

// listed answers an admin list (agents, nodes): every entry, or with
// ?limit=N (1–500) a page of them and, when more follow, a
// next_page_token to ask the next with (?page_token=).
func listed[T any](w http.ResponseWriter, r *http.Request, s *Server, name string,
	list func(context.Context, *authority.Caller, authority.Page) ([]T, bool, error), idOf func(T) string) {
	params, err := queryParams(r, "limit", "page_token")
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	var page authority.Page
	if vals, given := params["limit"]; given {
		n, err := parseUint(vals[0], "limit")
		if err != nil || n < 1 || n > maxListPage {
			writeError(w, r, s.log, fmt.Errorf("%w: limit must be from 1 to %d", errBadQuery, maxListPage))
			return
		}
		page.Limit = int(n)
	}
	if vals, given := params["page_token"]; given {
		after, err := base64.RawURLEncoding.DecodeString(vals[0])
		if err == nil && len(after) == 0 {
			err = errors.New("empty")
		}
		if err == nil {
			_, err = spiffeid.FromString(string(after)) // what next_page_token names
		}
		if err != nil || page.Limit == 0 {
			writeError(w, r, s.log, fmt.Errorf("%w: page_token must be a next_page_token, given with limit", errBadQuery))
			return
		}
		page.After = string(after)
	}
	out, more, err := list(r.Context(), callerOf(r), page)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	// Each entry encoded once. A page also ends at maxListPageBytes of
	// entries (one at least): a client reads answers of at most 4 MiB, and
	// a registration may be tens of KiB.
	entries, size := make([]json.RawMessage, 0, len(out)), 0
	for i, x := range out {
		b, err := json.Marshal(x)
		if err != nil {
			writeError(w, r, s.log, err)
			return
		}
		if size += len(b); page.Limit > 0 && size > maxListPageBytes && i > 0 {
			out, more = out[:i], true
			break
		}
		entries = append(entries, b)
	}
	body := map[string]any{name: entries}
	if more && len(out) > 0 {
		body["next_page_token"] = base64.RawURLEncoding.EncodeToString([]byte(idOf(out[len(out)-1])))
	}
	answer(w, r, s, http.StatusOK, body, nil)
}

// maxListPageBytes bounds the entries of a page of an admin list.
const maxListPageBytes = 2 << 20

func (s *Server) getAgent(w http.ResponseWriter, r *http.Request) {
	out, err := s.a.GetAgent(r.Context(), callerOf(r), r.PathValue("id"))
	answerAgent(w, r, s, http.StatusOK, out, err)
}

func (s *Server) updateAgent(w http.ResponseWriter, r *http.Request) {
	var ag registry.Agent
	if err := decodeJSON(r, &ag); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out, err := s.a.UpdateAgent(r.Context(), callerOf(r), r.PathValue("id"), &ag, ifMatch(r)...)
	answerAgent(w, r, s, http.StatusOK, out, err)
}

func (s *Server) deleteAgent(w http.ResponseWriter, r *http.Request) {
	err := s.a.DeleteAgent(r.Context(), callerOf(r), r.PathValue("id"), ifMatch(r)...)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) {
	listed(w, r, s, "nodes", s.a.ListNodes, func(n *registry.Node) string { return n.SPIFFEID })
}

// listRevocations is GET /v1/admin/revocations: the SPIFFE IDs revoked.
func (s *Server) listRevocations(w http.ResponseWriter, r *http.Request) {
	listed(w, r, s, "revoked_spiffe_ids", s.a.ListRevokedIDs, func(r delegation.Revocation) string { return r.SPIFFEID })
}

func (s *Server) banNode(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Reason string `json:"reason"`
	}
	s.onNode(w, r, &req, func(id string) (*registry.Node, error) {
		return s.a.BanNode(r.Context(), callerOf(r), id, req.Reason)
	})
}

func (s *Server) getNode(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out, err := s.a.GetNode(r.Context(), callerOf(r), id)
	answer(w, r, s, http.StatusOK, out, err)
}

func (s *Server) evictNode(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Reason  string `json:"reason"`
		LiftBan bool   `json:"lift_ban"`
	}
	s.onNode(w, r, &req, func(id string) (*registry.Node, error) {
		return s.a.EvictNode(r.Context(), callerOf(r), id, req.Reason, req.LiftBan)
	})
}

// onNode answers an admin's action on the node named by the path, whose
// body (req) is optional, with the node record do returns.
func (s *Server) onNode(w http.ResponseWriter, r *http.Request, req any, do func(id string) (*registry.Node, error)) {
	if !emptyBody(r) {
		if err := decodeJSON(r, req); err != nil {
			writeError(w, r, s.log, err)
			return
		}
	}
	id, err := pathID(r, "id")
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out, err := do(id)
	answer(w, r, s, http.StatusOK, out, err)
}

func (s *Server) addFederation(w http.ResponseWriter, r *http.Request) {
	var f authority.Federation
	if err := decodeJSON(r, &f); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out, err := s.a.AddFederation(r.Context(), callerOf(r), &f)
	answer(w, r, s, http.StatusCreated, out, err)
}

func (s *Server) listFederations(w http.ResponseWriter, r *http.Request) {
	out, err := s.a.ListFederations(r.Context(), callerOf(r))
	answer(w, r, s, http.StatusOK, map[string]any{"federations": out}, err)
}

func (s *Server) deleteFederation(w http.ResponseWriter, r *http.Request) {
	td, err := pathID(r, "td")
	if err == nil {
		err = s.a.DeleteFederation(r.Context(), callerOf(r), td)
	}
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// emptyBody reports whether r's body holds no bytes, however it was
// framed: a Content-Length of 0, or chunked with no chunk (as a client
// sends a body of unknown length that turns out empty). A body whose
// read failed (over the limit, cut short) is not empty: reading it says
// why.
func emptyBody(r *http.Request) bool {
	if r.ContentLength == 0 {
		return true
	}
	rb, ok := r.Body.(*readBodyCloser)
	return ok && rb.Len() == 0 && rb.err == nil
}

// pathID returns a path parameter, unescaped: a node ID is sent as one
// percent-encoded segment (url.PathEscape).
func pathID(r *http.Request, name string) (string, error) {
	v := r.PathValue(name)
	if v == "" {
		return "", errBadPath
	}
	return v, nil
}

// answer writes out with status, or err as a problem.
func answer(w http.ResponseWriter, r *http.Request, s *Server, status int, out any, err error) {
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, status, out)
}

// makeBackup is POST /v1/admin/backups: a consistent copy of the
// authority's state, written on the authority's host (see
// authority.MakeBackup).
func (s *Server) makeBackup(w http.ResponseWriter, r *http.Request) {
	var req struct{}
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	b, err := s.a.MakeBackup(r.Context(), callerOf(r))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusCreated, b)
}
