// Package workload serves the SPIFFE Workload API (gRPC on a Unix
// socket) to the workloads of one host, as `mandate node run
// --workload-api` does: the X509-SVIDs, JWT-SVIDs and trust bundles of
// the agents the host's node may host, obtained from the authority with
// the node's own credential.
//
// It guarantees:
//   - a caller is identified by what the kernel says of the process on
//     the other end of the socket (its user and group ids, SO_PEERCRED,
//     read when it connects, and the names of those ids at each call),
//     and by its executable (path, SHA-256 digest), supplementary
//     groups and cgroup (its path, systemd unit, container, pod), read
//     from /proc when it connects and checked to be of the process that
//     connected (a pidfd, SO_PEERPIDFD; else its start time), never by
//     anything it sends (a path or a digest, which any process could
//     be read as by running that program once it has connected, having
//     handed its connection to one of its own, only beside a user or
//     group selector; a
//     container or a pod, which a user's own cgroups could be named
//     for, only beside a user or group selector); it gets the
//     identities of the entries all of
//     whose selectors it matches, and nothing when it
//     matches none (PermissionDenied); what cannot be found out of it
//     matches no selector, and is said in the log, not to it; an
//     executable's digest is computed once per contents, of one of at
//     most 1 GiB and not on FUSE (whose server may answer a reading with
//     other bytes than it runs), and a call waits for it no longer than
//     it lasts; a process is read only for the entries its user and
//     group ids do not rule out; the readings of processes, lookups of
//     names and digests under way at once are bounded, and one that
//     hangs holds no more than its slot (the readings and digests of
//     one user id's callers a few of them: another user id's are still
//     read and hashed);
//   - every call without the security header `workload.spiffe.io: true`
//     is refused (InvalidArgument), as the specification requires, so
//     that a browser or a proxy cannot be made to call it;
//   - a private key is made on the host, kept in memory only, and handed
//     to the callers entitled to its identity alone; it never appears in
//     a log;
//   - an X509-SVID is served only while it is valid, and only after it
//     has been verified against its trust domain's bundle (go-spiffe);
//     it is renewed at 40 to 50% of its life, and the streams of
//     FetchX509SVID and the bundle calls send each change;
//   - the host syncs with the authority every 30 s (or at its bundle's
//     refresh hint, when shorter): an identity the authority no longer
//     lets the host serve (its agent deleted, or moved) is served no
//     more, its X509-SVID and JWT-SVIDs dropped; the trust bundles are
//     those of the latest answer, sync or X509-SVID, so that a CA or
//     JWT key the authority prepares is served before it signs, and a
//     federation added or dropped is followed; a node the authority
//     refuses for good (banned) stops serving;
//   - a JWT-SVID is minted by the authority (whose policy and audit log
//     see it) and reused for the same identity and audience until half
//     of its life has passed; callers asking for it at once share one
//     request; it is validated (go-spiffe) before it is served; once
//     the authority answers one with a Retry-After (its rate limit is
//     the node's), none is asked for until then (a minute at most);
//   - requests are bounded (a message is at most 64 KiB, its headers
//     8 KiB), and so are connections (256 per user id, 4,096 in all),
//     calls whose requests are being received, held until whole and
//     before their caller is checked (128 per user id, 1,024 in all;
//     ResourceExhausted over either), streams open (1,024 per user id,
//     8,192 in all; ResourceExhausted over either), and requests for
//     JWT-SVIDs under way (4 per user id); a socket
//     directory others may write to without the sticky bit, or that a
//     user other than root and this one owns, or below such a one, is
//     refused;
//     a failure to obtain credentials is said to the caller
//     (Unavailable) and in the log, and fails closed: nothing stale or
//     unverified is served.
package workload
