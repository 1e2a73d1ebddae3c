// Package store defines how Mandate keeps its persistent state: the
// [Store] and [Tx] interfaces, and the sentinel errors they return.
//
// # Model
//
// State is a set of named buckets, each an ordered map from non-empty byte
// keys to byte values, plus a per-bucket counter ([Tx.NextSequence]).
// Buckets need no declaration: they come into being on first write, and a
// bucket never written reads as empty.
//
// # Transactions are closures
//
// All reads and writes happen inside a function passed to [Store.View]
// (read-only, one consistent snapshot) or [Store.Update] (read-write). The
// implementation begins the transaction, calls the function and then commits
// or rolls back; callers never hold a transaction open themselves. So:
//
//   - A Tx is only valid inside the callback that received it. Do not keep
//     it, and do not use it from another goroutine.
//   - Do not call View or Update from inside a callback: a transaction
//     waiting for another transaction of the same goroutine can deadlock.
//   - Slices returned by Get and passed to Scan callbacks are copies owned by
//     the caller, and Put copies its arguments, so no slice ever aliases
//     storage memory.
//
// # Guarantees
//
//   - Atomicity: when an Update callback returns an error, nothing it wrote
//     is kept (its NextSequence calls included), and Update returns that
//     error such that [errors.Is] matches it.
//   - Durability: when Update returns nil, every write of the callback is on
//     stable storage (for example fsynced) and survives a crash or restart.
//   - Isolation: Updates behave as if run one at a time (serializable), so a
//     read-modify-write inside one Update never loses a concurrent write.
//   - Context: View and Update return ctx.Err() without calling the callback
//     when ctx is already done. A callback that has started is not
//     interrupted.
//
// # Retries and multiple replicas
//
// The interfaces are designed so that a second implementation on PostgreSQL
// can serve several Mandate replicas sharing one database. Such an
// implementation runs Update at SERIALIZABLE isolation and retries the whole
// callback on a serialization failure. An Update callback may therefore run
// more than once: it must have no effects outside the Tx (no sending on
// channels, no mutating caller state it does not fully recompute on each
// call) and must decide what to write only from what it reads through the
// Tx. Nothing else in the interfaces depends on a single process owning the
// data.
//
// # Implementations
//
// Package mandate.dev/mandate/store/bolt implements Store on a bbolt file
// for single-node deployments. No bbolt type appears outside store/; the
// rest of Mandate depends only on this package. Every implementation must
// pass the conformance suite in mandate.dev/mandate/store/storetest.
package store
