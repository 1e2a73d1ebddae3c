package api

import (
	"net/http"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/registry"
)

func (s *Server) createAgent(w http.ResponseWriter, r *http.Request) {
	var ag registry.Agent
	if err := decodeJSON(r, &ag); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out, err := s.a.CreateAgent(r.Context(), callerOf(r), &ag)
	answer(w, r, s, http.StatusCreated, out, err)
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request) {
	out, err := s.a.ListAgents(r.Context(), callerOf(r))
	answer(w, r, s, http.StatusOK, map[string]any{"agents": out}, err)
}

func (s *Server) getAgent(w http.ResponseWriter, r *http.Request) {
	out, err := s.a.GetAgent(r.Context(), callerOf(r), r.PathValue("id"))
	answer(w, r, s, http.StatusOK, out, err)
}

func (s *Server) updateAgent(w http.ResponseWriter, r *http.Request) {
	var ag registry.Agent
	if err := decodeJSON(r, &ag); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out, err := s.a.UpdateAgent(r.Context(), callerOf(r), r.PathValue("id"), &ag)
	answer(w, r, s, http.StatusOK, out, err)
}

func (s *Server) deleteAgent(w http.ResponseWriter, r *http.Request) {
	err := s.a.DeleteAgent(r.Context(), callerOf(r), r.PathValue("id"))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) {
	out, err := s.a.ListNodes(r.Context(), callerOf(r))
	answer(w, r, s, http.StatusOK, map[string]any{"nodes": out}, err)
}

func (s *Server) banNode(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Reason string `json:"reason"`
	}
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, r, s.log, err)
			return
		}
	}
	id, err := pathID(r, "id")
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out, err := s.a.BanNode(r.Context(), callerOf(r), id, req.Reason)
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
