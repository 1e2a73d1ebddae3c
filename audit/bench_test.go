package audit

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"mandate.dev/mandate/store"
)

// benchEntrySize is the encoded size of the entries the benchmarks append,
// as in the reference figures.
const benchEntrySize = 500

// benchPad returns the details padding that makes testEntry encode to
// about benchEntrySize bytes.
func benchPad(b *testing.B) int {
	return max(0, benchEntrySize-len(mustEncode(b, testEntry(1_000_000, 0))))
}

// BenchmarkAppend appends ~500-byte entries through Log.Append from a
// fixed number of writer goroutines, each appending one entry at a time
// and waiting for it to be durable. It reports entries/s and the
// submit→durable latency (p50, p99). The writer count is exact (rather
// than b.SetParallelism's multiple of GOMAXPROCS), so that it matches the
// issue's concurrency levels on any machine.
func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 16, 256, 1024} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			benchmarkAppend(b, writers)
		})
	}
}

func benchmarkAppend(b *testing.B, writers int) {
	s, _ := tempStore(b)
	l := start(b, testConfig(s))
	pad := benchPad(b)
	lat := make([][]time.Duration, writers)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := range writers {
		wg.Go(func() {
			for n := next.Add(1); n <= int64(b.N); n = next.Add(1) {
				begin := time.Now()
				if _, err := l.Append(b.Context(), testEntry(int(n), pad)); err != nil {
					b.Errorf("Append() = %v, want nil", err)
					return
				}
				lat[w] = append(lat[w], time.Since(begin))
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	all := slices.Sorted(slices.Values(slices.Concat(lat...)))
	if len(all) > 0 {
		// Nearest rank (⌈q·n/100⌉), as mandate bench reports them.
		b.ReportMetric(float64(all[(len(all)*50+99)/100-1])/1e6, "p50-ms")
		b.ReportMetric(float64(all[(len(all)*99+99)/100-1])/1e6, "p99-ms")
	}
}

// BenchmarkRawBoltGroupCommit is the ceiling for BenchmarkAppend: bbolt
// itself (default options, fsync on) putting ~500-byte values under
// sequential keys, 1024 per Update, with no Merkle work.
func BenchmarkRawBoltGroupCommit(b *testing.B) {
	db, err := bbolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	value := mustEncode(b, testEntry(0, benchPad(b)))
	b.ResetTimer()
	for i := 0; i < b.N; i += 1024 {
		err := db.Update(func(tx *bbolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("raw"))
			if err != nil {
				return err
			}
			for j := i; j < min(i+1024, b.N); j++ {
				if err := bk.Put(binary.BigEndian.AppendUint64(nil, uint64(j)), value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkStoreGroupCommit is BenchmarkRawBoltGroupCommit through
// store.Store (store/bolt), to separate the interface's cost from the
// log's.
func BenchmarkStoreGroupCommit(b *testing.B) {
	s, _ := tempStore(b)
	value := mustEncode(b, testEntry(0, benchPad(b)))
	b.ResetTimer()
	for i := 0; i < b.N; i += 1024 {
		err := s.Update(b.Context(), func(tx store.Tx) error {
			for j := i; j < min(i+1024, b.N); j++ {
				if err := tx.Put("raw", entryKey(uint64(j)), value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkEncode measures encoding one ~500-byte entry (done by the
// appending goroutine, outside the sequencer).
func BenchmarkEncode(b *testing.B) {
	e := testEntry(1, benchPad(b))
	for b.Loop() {
		if _, err := Encode(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSearchTwoValues pages through a query of two values: one
// that 20,000 entries have (an agent's ID) and one that 10 of them have
// (a type), in pages of 50, as an auditor's "what of this kind did
// this agent do" is. ns/op is the whole paging.
func BenchmarkSearchTwoValues(b *testing.B) {
	s, _ := tempStore(b)
	l := start(b, testConfig(s))
	agent := "spiffe://org-a.example/agent/busy"
	var in []Entry
	for i := range 20000 {
		e := Entry{Time: searchBase.Add(time.Duration(i) * time.Millisecond), Type: "svid.issued", Actor: agent}
		if i%2000 == 7 {
			e.Type = "agent.deleted"
		}
		in = append(in, e)
	}
	for chunk := range slices.Chunk(in, 1000) {
		appendAll(b, l, chunk)
	}
	q := Query{SPIFFEID: agent, Type: "agent.deleted", Limit: 50}
	for b.Loop() {
		found := 0
		q.After, q.HasAfter = 0, false
		for {
			got, next, err := l.Search(b.Context(), q)
			if err != nil {
				b.Fatal(err)
			}
			found += len(got)
			if next == nil {
				break
			}
			q.After, q.HasAfter = *next, true
		}
		if found != 10 {
			b.Fatalf("found %d, want 10", found)
		}
	}
}
