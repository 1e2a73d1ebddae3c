package attest

import (
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// IsNodeID reports whether id is a node SPIFFE ID of trust domain td as
// attestation makes them: spiffe://<td>/node/join/<the join token's id>
// (JoinToken.NodeID) or spiffe://<td>/node/tpm/<the EK's SHA-256, 64
// lowercase hex digits> (NodeID). An ID spelt otherwise, the hex in
// upper case say, names no node: a SPIFFE ID's path is case-sensitive.
func IsNodeID(td spiffeid.TrustDomain, id spiffeid.ID) bool {
	if !id.MemberOf(td) {
		return false
	}
	if tokenID, ok := strings.CutPrefix(id.Path(), "/node/"+MethodJoinToken+"/"); ok {
		return ValidJoinTokenID(tokenID)
	}
	if ekHash, ok := strings.CutPrefix(id.Path(), "/node/"+MethodTPM+"/"); ok {
		return len(ekHash) == 64 && canonical(ekHash, isLowerHex)
	}
	return false
}
