package delegation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// statementOf reads what a delegator signed: a JSON object with the
// Statement's fields (delegator, delegatee, principal, scopes, and
// optionally parent, parent_iss, purpose, not_after, cnf) and nothing
// else, no key twice, every value of its type (not_after an integer from
// 1 to MaxNotAfter, written as digits only; cnf an object of one
// member, x5t#S256, the unpadded base64url of 32 bytes), nothing after
// it. Any key order and any valid
// JSON string encoding is accepted: a delegator need not reproduce this
// package's encoding, only sign the same statement.
func statementOf(payload []byte) (Statement, error) {
	var st Statement
	fields := map[string]*string{"delegator": &st.Delegator, "delegatee": &st.Delegatee, "principal": &st.Principal,
		"parent": &st.Parent, "parent_iss": &st.ParentIssuer, "purpose": &st.Purpose}
	err := readObject(payload, func(key string, raw json.RawMessage) error {
		if key == "not_after" {
			n, err := strconv.ParseInt(string(raw), 10, 64)
			if err != nil || n < 1 || n > MaxNotAfter || string(raw) != strconv.FormatInt(n, 10) {
				return errors.New("not_after is not an integer from 1 to the year 9999, in digits")
			}
			st.NotAfter = n
			return nil
		}
		if key == "cnf" {
			st.Cnf = &Confirmation{}
			if len(raw) == 0 || raw[0] != '{' {
				return errors.New("cnf is not an object")
			}
			if err := readObject(raw, func(name string, v json.RawMessage) error {
				if name != "x5t#S256" {
					return fmt.Errorf("unknown cnf member %q", name)
				}
				return readString(v, &st.Cnf.X5tS256)
			}); err != nil {
				return fmt.Errorf("cnf: %v", err)
			}
			if !validThumbprint(st.Cnf.X5tS256) {
				return errors.New("cnf: x5t#S256 is not the unpadded base64url of 32 bytes")
			}
			return nil
		}
		if key == "scopes" {
			var elems []json.RawMessage
			if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &elems) != nil {
				return errors.New("scopes is not an array")
			}
			st.Scopes = make([]string, len(elems))
			for i, e := range elems {
				if err := readString(e, &st.Scopes[i]); err != nil {
					return fmt.Errorf("scopes[%d]: %v", i, err)
				}
			}
			return nil
		}
		dst, ok := fields[key]
		if !ok {
			return fmt.Errorf("unknown field %q", key)
		}
		if err := readString(raw, dst); err != nil {
			return fmt.Errorf("%s: %v", key, err)
		}
		return nil
	})
	return st, err
}

// readObject reads a JSON object and nothing after it, calling member
// with each name and raw value in turn; a name twice is an error.
func readObject(b []byte, member func(name string, raw json.RawMessage) error) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		name, _ := t.(string)
		if seen[name] {
			return fmt.Errorf("%q twice", name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		if err := member(name, raw); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the object")
	}
	return nil
}

// IsText reports whether s is valid UTF-8 without U+FFFD (the character
// a JSON writer puts in place of invalid bytes): what every string of a
// delegator's statement must be.
func IsText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, utf8.RuneError)
}

// IsPlainText reports whether s is text (IsText) a person can be shown as
// is: no control characters, and no format characters (bidirectional
// overrides, zero-width characters) that make it read otherwise.
func IsPlainText(s string) bool {
	return IsText(s) && strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }) < 0
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
// scopes (each once), and returns the statement as signed: with the
// not_after and cnf the delegator put on the hop (st's own, when set,
// must be those; when not, any or none is the hop's).
func (st Statement) signedAs(payload []byte) (Statement, error) {
	// A string that is not text would be written as U+FFFD, and read back
	// (by statementOf, here and by every verifier) as not text: refused
	// here too, or a hop would be issued that no verifier accepts.
	for _, s := range append([]string{st.Delegator, st.Delegatee, st.Principal, st.Parent, st.ParentIssuer, st.Purpose}, st.Scopes...) {
		if !IsText(s) {
			return st, fmt.Errorf("%w: the statement holds a string that is not UTF-8 text (invalid bytes or U+FFFD)", ErrDelegatorSignature)
		}
	}
	if bytes.Equal(payload, st.bytes()) {
		return st, nil // this package's own encoding of st: nothing to read
	}
	got, err := statementOf(payload)
	if err != nil {
		return st, fmt.Errorf("%w: the signed statement: %v", ErrDelegatorSignature, err)
	}
	if hasDuplicate(got.Scopes) {
		return st, fmt.Errorf("%w: the signed statement names a scope twice", ErrDelegatorSignature)
	}
	sorted := slices.Sorted(slices.Values(got.Scopes))
	if got.Delegator != st.Delegator || got.Delegatee != st.Delegatee || got.Principal != st.Principal || got.Parent != st.Parent ||
		got.ParentIssuer != st.ParentIssuer || got.Purpose != st.Purpose || !slices.Equal(sorted, slices.Sorted(slices.Values(st.Scopes))) ||
		st.NotAfter != 0 && got.NotAfter != st.NotAfter || st.Cnf != nil && (got.Cnf == nil || *got.Cnf != *st.Cnf) {
		return st, fmt.Errorf("%w: the delegator signed another hop", ErrDelegatorSignature)
	}
	return got, nil
}
