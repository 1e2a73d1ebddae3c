package delegation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
)

// statementOf reads what a delegator signed: a JSON object with the
// Statement's fields (delegator, delegatee, principal, scopes, and
// optionally parent, parent_iss, purpose) and nothing else, no key twice,
// every value of its type, nothing after it. Any key order and any valid
// JSON string encoding is accepted: a delegator need not reproduce this
// package's encoding, only sign the same statement.
func statementOf(payload []byte) (Statement, error) {
	var st Statement
	dec := json.NewDecoder(bytes.NewReader(payload))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return st, errors.New("not a JSON object")
	}
	fields := map[string]*string{"delegator": &st.Delegator, "delegatee": &st.Delegatee, "principal": &st.Principal,
		"parent": &st.Parent, "parent_iss": &st.ParentIssuer, "purpose": &st.Purpose}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return st, err
		}
		key, _ := t.(string)
		if seen[key] {
			return st, fmt.Errorf("%q twice", key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return st, err
		}
		if key == "scopes" {
			if len(raw) == 0 || raw[0] != '[' {
				return st, errors.New("scopes is not an array")
			}
			if err := json.Unmarshal(raw, &st.Scopes); err != nil {
				return st, fmt.Errorf("scopes: %v", err)
			}
			continue
		}
		dst, ok := fields[key]
		if !ok {
			return st, fmt.Errorf("unknown field %q", key)
		}
		if len(raw) == 0 || raw[0] != '"' {
			return st, fmt.Errorf("%s is not a string", key)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return st, err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return st, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return st, errors.New("data after the object")
	}
	return st, nil
}

// signedAs checks that payload, what a delegator signed, says st:
// the same parties, principal, parent and purpose, the same set of
// scopes (each once).
func (st Statement) signedAs(payload []byte) error {
	if bytes.Equal(payload, st.bytes()) {
		return nil // this package's own encoding of st: nothing to read
	}
	got, err := statementOf(payload)
	if err != nil {
		return fmt.Errorf("%w: the signed statement: %v", ErrDelegatorSignature, err)
	}
	if hasDuplicate(got.Scopes) {
		return fmt.Errorf("%w: the signed statement names a scope twice", ErrDelegatorSignature)
	}
	sorted := slices.Sorted(slices.Values(got.Scopes))
	if got.Delegator != st.Delegator || got.Delegatee != st.Delegatee || got.Principal != st.Principal || got.Parent != st.Parent ||
		got.ParentIssuer != st.ParentIssuer || got.Purpose != st.Purpose || !slices.Equal(sorted, slices.Sorted(slices.Values(st.Scopes))) {
		return fmt.Errorf("%w: the delegator signed another hop", ErrDelegatorSignature)
	}
	return nil
}
