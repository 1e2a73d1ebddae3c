package api

import (
	"errors"
	"io"
	"net/http"
	"strconv"

	"mandate.dev/mandate/witness"
)

// errNoWitness answers the witness endpoints of an authority that
// witnesses no log (audit.witness.logs is empty).
var errNoWitness = errors.New("api: this authority witnesses no log (audit.witness.logs)")

// witnessAddCheckpoint is POST /v1/witness/add-checkpoint, C2SP
// tlog-witness: a log asks the authority to cosign its checkpoint. Public
// (the checkpoint's signature is the log's credential), and answered as
// the protocol says: the cosignature line as text, a size conflict as
// text/x.tlog.size; other refusals are problems of its statuses.
func (s *Server) witnessAddCheckpoint(w http.ResponseWriter, r *http.Request) {
	wit := s.a.Witness()
	if wit == nil {
		writeError(w, r, s.log, errNoWitness)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, r, s.log, bodyError(err))
		return
	}
	cosig, err := wit.AddCheckpoint(r.Context(), body)
	var conflict *witness.SizeConflict
	switch {
	case err == nil:
		s.metrics.witnessed.WithLabelValues("cosigned").Inc()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(cosig)
	case errors.As(err, &conflict):
		s.metrics.witnessed.WithLabelValues("size_conflict").Inc()
		w.Header().Set("Content-Type", "text/x.tlog.size")
		w.WriteHeader(http.StatusConflict)
		_, _ = w.Write([]byte(strconv.FormatUint(conflict.Size, 10) + "\n"))
	case errors.Is(err, witness.ErrInconsistent) && !errors.Is(err, witness.ErrProofNotEmpty), errors.Is(err, witness.ErrRootMismatch):
		// What a fork looks like: the log signed a history other than
		// the one cosigned. The request is the evidence. (A proof
		// between equal sizes, of the root hash cosigned, is none.)
		s.metrics.witnessed.WithLabelValues("inconsistent").Inc()
		s.log.WarnContext(r.Context(), "witness: a checkpoint signed by its log came inconsistent with the one cosigned last: evidence that the log forked if the log sent it (anyone may submit a log's checkpoint), kept here", "err", err, "request", string(body))
		writeError(w, r, s.log, err)
	default:
		if _, ok := problemOf(err); ok {
			s.metrics.witnessed.WithLabelValues("refused").Inc()
		}
		writeError(w, r, s.log, err)
	}
}

// witnessVerifierKey is GET /v1/witness/verifier-key: the witness's
// cosignature/v1 verifier key, for log clients to verify its
// cosignatures with.
func (s *Server) witnessVerifierKey(w http.ResponseWriter, r *http.Request) {
	wit := s.a.Witness()
	if wit == nil {
		writeError(w, r, s.log, errNoWitness)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte(wit.VerifierKey() + "\n"))
}
