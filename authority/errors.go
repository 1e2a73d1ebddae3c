package authority

import "errors"

// Errors a caller (the API layer) branches on.
var (
	ErrUnauthenticated    = errors.New("authority: no client identity")
	ErrForbidden          = errors.New("authority: forbidden")
	ErrAgentNotRegistered = errors.New("authority: agent not registered")
	ErrNodeUnknown        = errors.New("authority: node not attested")
	ErrNotFound           = errors.New("authority: not found")
	ErrInvalidRequest     = errors.New("authority: invalid request")
	ErrFederation         = errors.New("authority: invalid federation relationship")
	// ErrSVIDSuperseded is a node renewing with an SVID replaced since.
	ErrSVIDSuperseded = errors.New("authority: SVID superseded")
	// ErrDelegateeInvalid is a delegation to what may not be a delegatee
	// (not an agent; not registered here): it also matches
	// ErrInvalidRequest.
	ErrDelegateeInvalid = errors.New("authority: invalid delegatee")
	// ErrScopeInvalid is a delegation naming scopes that are malformed
	// (not scope text, one named twice, none or too many): it also
	// matches ErrInvalidRequest.
	ErrScopeInvalid = errors.New("authority: invalid scope")
	// ErrRenewedMeanwhile is a node renewal that lost a race with another
	// renewal of the node.
	ErrRenewedMeanwhile = errors.New("authority: renewed meanwhile")
	// ErrChangedMeanwhile is an SVID or a delegation whose decision was
	// made on a registration (or a node's facts) changed before its
	// commit: it is not issued, and may be asked again.
	ErrChangedMeanwhile = errors.New("authority: changed meanwhile")
	// ErrIDRevoked is a request for, by or through a SPIFFE ID revoked
	// here (POST /v1/admin/revocations): for ever, it gets no SVID, and
	// a node's agents get none through it.
	ErrIDRevoked = errors.New("authority: SPIFFE ID revoked")
	// ErrPreconditionFailed is a change conditioned on a version of a
	// registration (IfMatch) that is not the current one.
	ErrPreconditionFailed = errors.New("authority: precondition failed")
)

// delegateeError is an ErrDelegateeInvalid, said as an ErrInvalidRequest.
type delegateeError struct{ msg string }

func (e delegateeError) Error() string { return ErrInvalidRequest.Error() + ": " + e.msg }

func (e delegateeError) Is(target error) bool {
	return target == ErrInvalidRequest || target == ErrDelegateeInvalid
}

// scopeError is an ErrScopeInvalid, said as an ErrInvalidRequest.
type scopeError struct{ msg string }

func (e scopeError) Error() string { return ErrInvalidRequest.Error() + ": " + e.msg }

func (e scopeError) Is(target error) bool {
	return target == ErrInvalidRequest || target == ErrScopeInvalid
}
