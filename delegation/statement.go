package delegation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"
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
			var elems []json.RawMessage
			if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &elems) != nil {
				return st, errors.New("scopes is not an array")
			}
			st.Scopes = make([]string, len(elems))
			for i, e := range elems {
				if err := readString(e, &st.Scopes[i]); err != nil {
					return st, fmt.Errorf("scopes[%d]: %v", i, err)
				}
			}
			continue
		}
		dst, ok := fields[key]
		if !ok {
			return st, fmt.Errorf("unknown field %q", key)
		}
		if err := readString(raw, dst); err != nil {
			return st, fmt.Errorf("%s: %v", key, err)
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

// readString reads a JSON string that holds text only: no invalid UTF-8
// and no unpaired surrogate (which a reader turns into U+FFFD, so that
// different signed bytes would read the same).
func readString(raw json.RawMessage, dst *string) error {
	if len(raw) == 0 || raw[0] != '"' || !utf8.Valid(raw) {
		return errors.New("not a string of UTF-8 text")
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return err
	}
	if strings.ContainsRune(*dst, utf8.RuneError) {
		return errors.New("an invalid or replacement character")
	}
	return nil
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
