package mandate.delegation_test

import rego.v1

import data.mandate.delegation

td_data := {"trust_domain": "org-a.example", "federated_trust_domains": ["org-b.example"]}

root := {
	"delegator": {
		"spiffe_id": "spiffe://org-a.example/agent/planner", "trust_domain": "org-a.example",
		"scopes": ["calendar:read", "payments:write"], "host": {"level": "hardware"},
	},
	"delegatee": {"spiffe_id": "spiffe://org-b.example/agent/booker", "trust_domain": "org-b.example"},
	"principal": "alice@example.com",
	"scopes": ["calendar:read"],
	"depth": 1,
	"exp": 2000,
	"chain": [],
}

# The chain above a hop of depth 2, as Mandate tells it: the parent
# hop's delegator and delegatee, and the hop itself.
above := [
	{"spiffe_id": "spiffe://org-a.example/agent/root", "revoked": false},
	{"spiffe_id": "spiffe://org-a.example/agent/planner", "revoked": false},
	{"spiffe_id": "delegation d1 of spiffe://org-a.example", "revoked": false},
]

decide(req) := d if {
	d := delegation.decision with input as req with data.mandate.trust_domain as td_data.trust_domain
		with data.mandate.federated_trust_domains as td_data.federated_trust_domains
}

test_root_hop_allowed if {
	d := decide(root)
	d.allow
	d.reasons == []
}

test_unfederated_trust_domain if {
	d := decide(object.union(root, {"delegatee": {"spiffe_id": "spiffe://org-c.example/agent/x", "trust_domain": "org-c.example"}}))
	not d.allow
	d.reasons == ["delegatee trust domain org-c.example is not federated with org-a.example"]
}

test_same_trust_domain_allowed if {
	decide(object.union(root, {"delegatee": {"spiffe_id": "spiffe://org-a.example/agent/y", "trust_domain": "org-a.example", "host": {"level": "token"}}})).allow
}

test_scopes_must_be_granted if {
	d := decide(object.union(root, {"scopes": ["calendar:read", "mail:send"]}))
	not d.allow
	d.reasons == ["scope mail:send is not granted to the delegator"]
}

test_sub_delegation_narrows_to_parent_scopes if {
	hop := object.union(root, {"depth": 2, "parent": {"id": "d1", "scopes": ["calendar:read"], "exp": 3000}, "chain": above, "scopes": ["payments:write"]})
	d := decide(hop)
	not d.allow
	"scope payments:write is not granted to the delegator" in d.reasons
}

test_depth_bounded if {
	d := decide(object.union(root, {"depth": 4, "parent": {"id": "d3", "scopes": ["calendar:read"], "exp": 3000}, "chain": above}))
	not d.allow
	d.reasons == ["chain depth 4 exceeds the maximum of 3"]
}

test_expiry_not_beyond_parent if {
	d := decide(object.union(root, {"depth": 2, "exp": 5000, "parent": {"id": "d1", "scopes": ["calendar:read"], "exp": 3000}, "chain": above}))
	not d.allow
	d.reasons == ["expiry 5000 is beyond the parent's 3000"]
}

test_sensitive_scope_needs_hardware_host if {
	ok := object.union(root, {"scopes": ["payments:write"]})
	decide(ok).allow
	d := decide(object.union(ok, {"delegator": object.union(root.delegator, {"host": {"level": "token"}})}))
	not d.allow
	d.reasons == ["sensitive scopes [\"payments:write\"] need a hardware-attested host (the delegator's is token)"]
	d2 := decide(object.union(ok, {"delegatee": object.union(root.delegatee, {"host": {"level": "token"}})}))
	d2.reasons == ["sensitive scopes [\"payments:write\"] need a hardware-attested host (the delegatee's is token)"]
}

test_revoked_or_banned_anywhere_denies if {
	d := decide(object.union(root, {"chain": [{"spiffe_id": "spiffe://org-a.example/agent/root", "revoked": true}]}))
	d.reasons == ["spiffe://org-a.example/agent/root is revoked"]
	d2 := decide(object.union(root, {"delegatee": object.union(root.delegatee, {"banned": true})}))
	d2.reasons == ["spiffe://org-b.example/agent/booker is banned"]
	d3 := decide(object.union(root, {"depth": 2, "parent": {"id": "d1", "scopes": ["calendar:read"], "exp": 3000, "revoked": true}, "chain": above}))
	d3.reasons == ["the parent delegation is revoked"]
}

test_every_reason_is_given if {
	d := decide(object.union(root, {"scopes": ["x"], "depth": 9, "delegatee": {"spiffe_id": "spiffe://org-z.example/a", "trust_domain": "org-z.example", "revoked": true}}))
	count(d.reasons) == 5
}

test_drifted_or_banned_host_denies if {
	d := decide(object.union(root, {"delegator": object.union(root.delegator, {"host": {"level": "hardware", "drifted": true}})}))
	d.reasons == ["the delegator's host failed re-attestation"]
	d2 := decide(object.union(root, {"delegatee": object.union(root.delegatee, {"host": {"level": "token", "banned": true}})}))
	d2.reasons == ["the delegatee's host is banned"]
}

test_lapsed_host_denies if {
	d := decide(object.union(root, {"delegator": object.union(root.delegator, {"host": {"level": "token", "lapsed": true}})}))
	d.reasons == ["the delegator's host is attested no longer"]
	d2 := decide(object.union(root, {"delegatee": object.union(root.delegatee, {"host": {"level": "token", "lapsed": false}})}))
	d2.allow
	d3 := decide(object.union(root, {"delegatee": object.union(root.delegatee, {"host": {"level": "token", "lapsed": true}})}))
	d3.reasons == ["the delegatee's host is attested no longer"]
}

test_empty_request_denies if {
	d := decide({})
	not d.allow
	"no delegator in the request" in d.reasons
	"no delegatee in the request" in d.reasons
}

test_malformed_facts_deny if {
	# Each of these once slipped through rules that needed the fact.
	not decide(object.union(root, {"chain": [{"delegatee": "spiffe://org-a.example/agent/x", "revoked": true}]})).allow
	not decide(object.union(root, {"chain": [{"revoked": true}]})).allow
	no_td := object.remove(root, ["delegatee"])
	not decide(object.union(no_td, {"delegatee": {"spiffe_id": "spiffe://evil.example/agent/x"}})).allow
	decide(object.union(no_td, {"delegatee": {"spiffe_id": "spiffe://org-b.example/agent/x"}})).allow
	not decide(object.union(root, {"scopes": ["payments:write"], "delegatee": object.union(root.delegatee, {"host": {}})})).allow
	not decide(object.union(root, {"depth": 3})).allow
	not decide(object.union(root, {"depth": 2, "parent": {"id": "p", "scopes": ["calendar:read"]}})).allow
	not decide(object.union(root, {"scopes": "secrets:read"})).allow
	not decide(object.union(root, {"exp": "soon"})).allow
	not delegation.allow with input as root with data.mandate.trust_domain as "org-a.example"
		with data.mandate.federated_trust_domains as ["org-b.example"]
		with data.mandate.config as {}
}

test_sensitive_scopes_must_be_configured_as_a_list if {
	# A sensitive scope from a host that is not hardware-attested.
	req := object.union(root, {"scopes": ["payments:write"], "delegator": object.union(root.delegator, {"host": {"level": "token"}})})
	not decide(req).allow
	every bad in ["payments:write", {"payments:write": true}, null] {
		d := decide(req) with data.mandate.config.delegation.sensitive_scopes as bad
		not d.allow
		"the sensitive scopes are not configured as a list" in d.reasons
	}
	d := decide(req) with data.mandate.config.delegation as {"max_depth": 3}
	not d.allow
	d.reasons == ["the sensitive scopes are not configured as a list"]

	# None sensitive, said as an empty list.
	decide(req).allow with data.mandate.config.delegation.sensitive_scopes as []
}

sub := object.union(root, {"depth": 2, "parent": {"id": "d1", "scopes": ["calendar:read"], "exp": 3000}, "chain": above})

test_sub_delegation_allowed if {
	d := decide(sub)
	d.allow
	d.reasons == []
}

test_the_chain_above_must_be_told if {
	# Revocations anywhere above are judged on the chain: a hop whose
	# chain is missing, not a list or empty below the root is not allowed.
	d := decide(object.remove(sub, ["chain"]))
	d.reasons == ["the chain above must be a list of parties"]
	every bad in [null, "spiffe://org-a.example/agent/root", {"spiffe_id": "spiffe://org-a.example/agent/root", "revoked": true}, ["spiffe://org-a.example/agent/root"], [null]] {
		d2 := decide(object.union(sub, {"chain": bad}))
		d2.reasons == ["the chain above must be a list of parties"]
	}
	d3 := decide(object.union(sub, {"chain": []}))
	d3.reasons == ["a hop below the root needs the chain above it"]
	decide(object.union(root, {"chain": []})).allow
}

test_a_parent_must_be_a_hop_above if {
	# A hop with a parent is below the root: depth 1 would judge it as a
	# root (the maximum depth among others).
	d := decide(object.union(sub, {"depth": 1}))
	d.reasons == ["a hop below a parent has a depth of at least 2, not 1"]
	every bad in [null, "d1", ["d1"], false] {
		d2 := decide(object.union(sub, {"parent": bad}))
		not d2.allow
		"the parent hop is not an object" in d2.reasons
	}
}

test_parties_need_spiffe_ids if {
	# A party whose SPIFFE ID is null, empty or of another type is not
	# known: the hop is not allowed.
	every bad in [null, "", "planner", 1, true, [], {}] {
		d := decide(object.union(root, {"delegator": object.union(root.delegator, {"spiffe_id": bad})}))
		not d.allow
		"no delegator in the request" in d.reasons
		d2 := decide(object.union(root, {"delegatee": object.union(root.delegatee, {"spiffe_id": bad})}))
		not d2.allow
		"no delegatee in the request" in d2.reasons
	}
}

test_delegatee_trust_domain_of_another_type if {
	# Not a conflict between the trust domain given and the one read
	# from the SPIFFE ID (an evaluation error): a trust domain unknown.
	every bad in [false, null, 1, ["org-b.example"]] {
		d := decide(object.union(root, {"delegatee": object.union(root.delegatee, {"trust_domain": bad})}))
		not d.allow
		d.reasons == ["the delegatee's trust domain is unknown"]
	}
}
