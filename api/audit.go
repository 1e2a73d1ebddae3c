package api

import (
	"compress/gzip"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/authority"
)

func (s *Server) auditCheckpoint(w http.ResponseWriter, r *http.Request) {
	s.writeCheckpoint(w, r, s.a.AuditCheckpoint)
}

// auditWitnessedCheckpoint is GET /v1/audit/checkpoint/witnessed: the
// largest checkpoint kept that cosignatures=N (default 1) of the
// witnesses named by witness=NAME (repeatable; default: any of
// audit.witnesses) cosigned, with the log's signature and the
// cosignatures.
func (s *Server) auditWitnessedCheckpoint(w http.ResponseWriter, r *http.Request) {
	q, err := witnessQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.writeCheckpoint(w, r, func(c *authority.Caller) ([]byte, error) { return s.a.WitnessedCheckpoint(c, q) })
}

// maxWitnessNames bounds the witness=NAME parameters of a witnessed
// checkpoint's query.
const maxWitnessNames = 64

// witnessQuery reads the query of GET /v1/audit/checkpoint/witnessed.
func witnessQuery(raw string) (authority.WitnessQuery, error) {
	var q authority.WitnessQuery
	v, err := url.ParseQuery(raw)
	if err != nil {
		return q, fmt.Errorf("%w: the query string does not parse (%v)", errBadQuery, err)
	}
	for name, vals := range v {
		switch name {
		case "cosignatures":
			n, err := strconv.Atoi(vals[0])
			if len(vals) > 1 || err != nil || n < 1 {
				return q, fmt.Errorf("%w: cosignatures must be given once, a positive integer", errBadQuery)
			}
			q.Cosignatures = n
		case "witness":
			if len(vals) > maxWitnessNames || slices.Contains(vals, "") {
				return q, fmt.Errorf("%w: witness must name a witness's key, at most %d times", errBadQuery, maxWitnessNames)
			}
			q.Named = vals
		default:
			return q, fmt.Errorf("%w: unknown parameter %.64q (known: cosignatures, witness)", errBadQuery, name)
		}
	}
	return q, nil
}

// writeCheckpoint answers the signed checkpoint get gives the caller.
func (s *Server) writeCheckpoint(w http.ResponseWriter, r *http.Request, get func(*authority.Caller) ([]byte, error)) {
	cp, err := get(callerOf(r))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-cache") // the latest, every time (as /checkpoint)
	_, _ = w.Write(cp)
}

func (s *Server) auditEntry(w http.ResponseWriter, r *http.Request) {
	index, err := parseUint(r.PathValue("index"), "index")
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	params, err := queryParams(r, "tree_size")
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	var size uint64
	if vals, given := params["tree_size"]; given {
		if size, err = parseUint(vals[0], "tree_size"); err != nil || size == 0 {
			writeError(w, r, s.log, fmt.Errorf("%w: tree_size must be a positive integer", errBadQuery))
			return
		}
	}
	out, err := s.a.ReadAuditEntry(r.Context(), callerOf(r), index, size)
	answer(w, r, s, http.StatusOK, out, err)
}

func (s *Server) auditConsistency(w http.ResponseWriter, r *http.Request) {
	q, err := queryParams(r, "from", "to")
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
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

// queryParams reads the request's query parameters, refusing a query
// that does not parse, a parameter not among names, and one given twice:
// none of them may be dropped silently (a search that lost its filter
// would answer with everything).
func queryParams(r *http.Request, names ...string) (url.Values, error) {
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("%w: the query string does not parse (%v)", errBadQuery, err)
	}
	for name, vals := range v {
		switch {
		case !slices.Contains(names, name):
			return nil, fmt.Errorf("%w: unknown parameter %.64q (known: %s)", errBadQuery, name, strings.Join(names, ", "))
		case len(vals) > 1:
			return nil, fmt.Errorf("%w: parameter %.64q given %d times", errBadQuery, name, len(vals))
		}
	}
	return v, nil
}

// parseUint reads a decimal unsigned integer parameter.
func parseUint(v, name string) (uint64, error) {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s must be an unsigned decimal integer", errBadQuery, name)
	}
	return n, nil
}

// searchAnswer is the body of GET /v1/audit/search.
type searchAnswer struct {
	Entries       []authority.AuditEntry `json:"entries"`
	NextPageToken string                 `json:"next_page_token,omitempty"`
}

func (s *Server) auditSearch(w http.ResponseWriter, r *http.Request) {
	params, err := queryParams(r, "spiffe_id", "type", "decision_id", "delegation_id", "since", "until", "limit", "page_token")
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	q, err := parseQuery(params)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	entries, next, err := s.a.SearchAudit(r.Context(), callerOf(r), q)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out := searchAnswer{Entries: entries}
	if next != nil {
		out.NextPageToken = strconv.FormatUint(*next, 10)
	}
	writeJSON(w, http.StatusOK, out)
}

// parseQuery reads the search parameters. page_token is the cursor a
// previous page returned.
func parseQuery(v url.Values) (audit.Query, error) {
	// A filter given empty is refused, not read as no filter: a client
	// whose variable was empty would get everything (page_token may be
	// empty: the first page).
	for _, name := range []string{"spiffe_id", "type", "decision_id", "delegation_id", "since", "until", "limit"} {
		if vals, ok := v[name]; ok && vals[0] == "" {
			return audit.Query{}, fmt.Errorf("%w: %s is empty (leave it out to search without it)", errBadQuery, name)
		}
	}
	q := audit.Query{SPIFFEID: v.Get("spiffe_id"), Type: v.Get("type"), DecisionID: v.Get("decision_id"), DelegationID: v.Get("delegation_id")}
	for name, t := range map[string]*time.Time{"since": &q.Since, "until": &q.Until} {
		if s := v.Get(name); s != "" {
			var err error
			if *t, err = time.Parse(time.RFC3339Nano, s); err != nil {
				return q, fmt.Errorf("%w: %s must be an RFC 3339 time", errBadQuery, name)
			}
			// The zero time leaves an end of audit.Query open: as until,
			// the earliest time there is, it would select every entry
			// instead of none.
			if name == "until" && t.IsZero() {
				return q, fmt.Errorf("%w: until %s selects no entry (leave it out to search without it)", audit.ErrBadQuery, s)
			}
		}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return q, fmt.Errorf("%w: limit must be an integer", errBadQuery)
		}
		q.Limit = n
	}
	if s := v.Get("page_token"); s != "" {
		n, err := parseUint(s, "page_token")
		if err != nil {
			return q, err
		}
		q.After, q.HasAfter = n, true
	}
	return q, nil
}

// tiles serves the C2SP tlog-tiles read path: /checkpoint and /tile/....
func (s *Server) tiles(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/")
	if strings.HasPrefix(path, "tile/entries/") {
		// An entry bundle waits its turn (maxEntryBundleReads), within
		// the request's time: at its end, 503 timeout.
		select {
		case s.entryReads <- struct{}{}:
			defer func() { <-s.entryReads }()
		case <-r.Context().Done():
			w.Header().Set("Cache-Control", "no-store")
			writeError(w, r, s.log, fmt.Errorf("api: entry bundle: waiting for others to be sent: %w", r.Context().Err()))
			return
		}
	}
	b, err := s.a.AuditTile(r.Context(), callerOf(r), path)
	if err != nil {
		// Not kept by a cache: a tile beyond the log today is served
		// once the log grows, and a cache of the refusal would hide it
		// (the successful answers below are cached for a year).
		w.Header().Set("Cache-Control", "no-store")
		writeError(w, r, s.log, err)
		return
	}
	w.Header().Set("X-Content-Type-Options", "nosniff") // as every other answer
	if path == "checkpoint" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(b)
		return
	}
	// A tile never changes, a partial one (.p/W) neither: its address
	// names its width (tlog-tiles: "This endpoint is immutable").
	w.Header().Set("Content-Type", "application/octet-stream")
	scope := "private" // readable by auditors only: no shared cache may keep it
	if s.a.Config().Audit.PublicReadPath {
		scope = "public"
	}
	w.Header().Set("Cache-Control", scope+", max-age=31536000, immutable")
	// Entry bundles are compressed when the client takes gzip
	// (tlog-tiles: they SHOULD be compressed at the HTTP layer).
	if strings.HasPrefix(path, "tile/entries/") {
		w.Header().Add("Vary", "Accept-Encoding")
		if acceptsGzip(r) {
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			_, _ = zw.Write(b)
			_ = zw.Close()
			return
		}
	}
	_, _ = w.Write(b)
}

// acceptsGzip reports whether r's Accept-Encoding takes gzip: named,
// with no weight of 0 (RFC 9110 §12.4.2, §12.5.3; parameter names in any
// case).
func acceptsGzip(r *http.Request) bool {
	for _, h := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(h, ",") {
			coding, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			for param := range strings.SplitSeq(params, ";") {
				name, value, _ := strings.Cut(param, "=")
				if strings.EqualFold(strings.TrimSpace(name), "q") {
					q, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
					return err == nil && q > 0
				}
			}
			return true
		}
	}
	return false
}

// auditVerifierKey serves the log's verifier key (note format). It is
// public: it lets anyone check checkpoints, and an auditor should compare
// it with the key obtained out of band (printed at start, log.vkey).
func (s *Server) auditVerifierKey(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff") // as every other answer
	_, _ = w.Write([]byte(s.a.AuditVerifierKey() + "\n"))
}
