package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Version is the entry encoding version this package writes, and the only
// one Decode accepts.
const Version = 1

// MaxEntrySize is the largest encoded entry, in bytes: 64 KiB less one
// byte, so that every entry fits the 16-bit length of a tlog-tiles entry
// bundle.
const MaxEntrySize = 64<<10 - 1

// MaxTypeLen is the longest event type, in bytes.
const MaxTypeLen = 64

// ActorSystem is the actor of events the authority causes by itself (a
// scheduled rotation, for example) rather than on a caller's request.
const ActorSystem = "system"

// timeLayout is the only time format of an entry: UTC, nanoseconds always
// written (nine digits), and the zone always "Z".
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// ErrInvalidEntry is matched (with errors.Is) by every error of Encode and
// Decode, and by Append's error for an entry Encode refuses.
var ErrInvalidEntry = errors.New("audit: invalid entry")

// Entry is one event of the log. Its encoding (see Encode) is the exact
// bytes stored and hashed into the Merkle tree.
type Entry struct {
	// Time is when the event happened. It is encoded in UTC with
	// nanosecond precision, so it round-trips exactly (but not its
	// location or monotonic reading). Required; years 1 to 9999.
	Time time.Time

	// Type names the event, e.g. "join_token.created", "node.attested",
	// "svid.issued", "agent.registered", "node.banned", "ca.rotated":
	// lower-case dot-separated words of [a-z0-9_], at most MaxTypeLen bytes.
	// Required.
	Type string

	// Actor is who caused the event: the caller's SPIFFE ID, or ActorSystem.
	// Required.
	Actor string

	// Subject is what the event is about (a SPIFFE ID, a token id, a
	// serial number...). Optional.
	Subject string

	// Accountable lists the accountable parties of the agents involved, in
	// the order given. Optional.
	Accountable []Party

	// DecisionID and PolicyRevision identify the policy decision involved,
	// if any. DelegationID names the delegation involved, if any. Optional.
	DecisionID     string
	PolicyRevision string
	DelegationID   string

	// Details holds event-specific fields: a JSON object (or empty, for
	// none). Encode stores it in canonical form (see the package
	// documentation); Decode returns that canonical form.
	Details json.RawMessage
}

// ReadDetails reads e's details into v as every reader of them must: keys
// match exactly (a details object may hold "decision" and a key that only
// folds to it, as "deciſion", and these are different members, as for any
// JSON reader that is not case-insensitive), and members unknown to v are
// ignored. Details that are empty read as an empty object.
func (e Entry) ReadDetails(v any) error {
	b := []byte(e.Details)
	if len(b) == 0 {
		b = []byte("{}")
	}
	if err := jsonv2.Unmarshal(b, v); err != nil {
		return fmt.Errorf("audit: %s entry: details: %w", e.Type, err)
	}
	return nil
}

// Party is one accountable party: an agent and the people and
// organisations that answer for it.
type Party struct {
	SPIFFEID         spiffeid.ID // required
	Operator         string      // team or org unit running the agent
	ModelProvider    string
	Model            string
	ResponsibleParty string // a contact
}

// wireEntry and wireParty are what Decode reads before Encode checks the
// result is canonical. Field order here is irrelevant; Encode fixes it.
type wireEntry struct {
	V              int             `json:"v"`
	Time           string          `json:"time"`
	Type           string          `json:"type"`
	Actor          string          `json:"actor"`
	Subject        string          `json:"subject"`
	Accountable    []wireParty     `json:"accountable"`
	DecisionID     string          `json:"decision_id"`
	PolicyRevision string          `json:"policy_revision"`
	DelegationID   string          `json:"delegation_id"`
	Details        json.RawMessage `json:"details"`
}

type wireParty struct {
	SPIFFEID         string `json:"spiffe_id"`
	Operator         string `json:"operator"`
	ModelProvider    string `json:"model_provider"`
	Model            string `json:"model"`
	ResponsibleParty string `json:"responsible_party"`
}

// Encode returns the canonical encoding of e (see the package
// documentation), or an error matching ErrInvalidEntry if e breaks a rule
// of Entry or encodes to more than MaxEntrySize bytes.
func Encode(e Entry) ([]byte, error) {
	b, _, err := encode(e)
	return b, err
}

// encode returns the encoding of e and e normalized as Decode would return
// it (time in UTC, details canonical).
func encode(e Entry) ([]byte, Entry, error) {
	if err := validate(e); err != nil {
		return nil, Entry{}, err
	}
	e.Time = e.Time.UTC()
	if len(e.Details) > 0 {
		d, err := canonicalDetails(e.Details)
		if err != nil {
			return nil, Entry{}, err
		}
		e.Details = d
	} else {
		e.Details = nil
	}
	b := appendEntry(make([]byte, 0, sizeHint(e)), e)
	if len(b) > MaxEntrySize {
		return nil, Entry{}, invalid("encodes to %d bytes, more than %d", len(b), MaxEntrySize)
	}
	return b, e, nil
}

// sizeHint is about the encoded size of e (more with many escapes), so
// that appendEntry rarely grows its buffer.
func sizeHint(e Entry) int {
	n := 160 + len(e.Type) + len(e.Actor) + len(e.Subject) + len(e.DecisionID) +
		len(e.PolicyRevision) + len(e.DelegationID) + len(e.Details)
	for _, p := range e.Accountable {
		n += 100 + len(p.SPIFFEID.String()) + len(p.Operator) + len(p.ModelProvider) +
			len(p.Model) + len(p.ResponsibleParty)
	}
	return n
}

// appendEntry writes the fields of a validated, normalized entry in their
// fixed order, leaving out empty optional ones.
func appendEntry(b []byte, e Entry) []byte {
	b = fmt.Appendf(b, `{"v":%d,"time":`, Version)
	b = appendString(b, e.Time.Format(timeLayout))
	b = appendField(b, "type", e.Type)
	b = appendField(b, "actor", e.Actor)
	b = appendField(b, "subject", e.Subject)
	if len(e.Accountable) > 0 {
		b = append(b, `,"accountable":[`...)
		for i, p := range e.Accountable {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendParty(b, p)
		}
		b = append(b, ']')
	}
	b = appendField(b, "decision_id", e.DecisionID)
	b = appendField(b, "policy_revision", e.PolicyRevision)
	b = appendField(b, "delegation_id", e.DelegationID)
	if len(e.Details) > 0 {
		b = append(b, `,"details":`...)
		b = append(b, e.Details...)
	}
	return append(b, '}')
}

func appendParty(b []byte, p Party) []byte {
	b = append(b, `{"spiffe_id":`...)
	b = appendString(b, p.SPIFFEID.String())
	b = appendField(b, "operator", p.Operator)
	b = appendField(b, "model_provider", p.ModelProvider)
	b = appendField(b, "model", p.Model)
	b = appendField(b, "responsible_party", p.ResponsibleParty)
	return append(b, '}')
}

// appendField writes ,"name":"value" unless value is empty.
func appendField(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

// Decode parses an encoded entry. It accepts exactly the bytes Encode
// produces: unknown fields, another version, other whitespace, escapes,
// field order or time format, duplicate fields, trailing data and anything
// above MaxEntrySize are refused with an error matching ErrInvalidEntry. So
// for every b that Decode accepts, Encode(Decode(b)) returns b.
func Decode(b []byte) (Entry, error) {
	if len(b) > MaxEntrySize {
		return Entry{}, invalid("%d bytes, more than %d", len(b), MaxEntrySize)
	}
	var w wireEntry
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return Entry{}, invalid("%v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Entry{}, invalid("data after the entry")
	}
	if w.V != Version {
		return Entry{}, invalid("version %d, want %d", w.V, Version)
	}
	e, err := w.entry()
	if err != nil {
		return Entry{}, err
	}
	canon, e, err := encode(e)
	if err != nil {
		return Entry{}, err
	}
	if !bytes.Equal(canon, b) {
		return Entry{}, invalid("not in canonical form")
	}
	return e, nil
}

// entry converts the parsed fields; encode validates the rest.
func (w *wireEntry) entry() (Entry, error) {
	t, err := time.Parse(timeLayout, w.Time)
	if err != nil {
		return Entry{}, invalid("time %q is not RFC 3339 UTC with nanoseconds", w.Time)
	}
	e := Entry{
		Time:           t,
		Type:           w.Type,
		Actor:          w.Actor,
		Subject:        w.Subject,
		DecisionID:     w.DecisionID,
		PolicyRevision: w.PolicyRevision,
		DelegationID:   w.DelegationID,
		Details:        w.Details,
	}
	for _, p := range w.Accountable {
		id, err := spiffeid.FromString(p.SPIFFEID)
		if err != nil {
			return Entry{}, invalid("accountable party: %v", err)
		}
		e.Accountable = append(e.Accountable, Party{
			SPIFFEID:         id,
			Operator:         p.Operator,
			ModelProvider:    p.ModelProvider,
			Model:            p.Model,
			ResponsibleParty: p.ResponsibleParty,
		})
	}
	return e, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidEntry, fmt.Sprintf(format, args...))
}
