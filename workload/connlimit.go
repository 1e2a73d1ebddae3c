package workload

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Bounds of the connections open at once: any local process may
// connect, and each connection holds a descriptor and some memory.
const (
	maxConnsPerUID = 256
	maxConns       = 4096
)

// connLimit admits a connection while its caller's user id has fewer
// than perUID open, and all callers fewer than total: one local user
// cannot take every connection, nor the node run process's descriptors.
type connLimit struct {
	perUID, total int
	log           *slog.Logger

	mu     sync.Mutex
	open   int
	byUID  map[uint32]int
	warned time.Time
}

func newConnLimit(perUID, total int, log *slog.Logger) *connLimit {
	return &connLimit{perUID: perUID, total: total, log: log, byUID: map[uint32]int{}}
}

// listen is ln with the limit: a connection over it, or whose caller
// cannot be identified, is closed at once.
func (l *connLimit) listen(ln net.Listener) net.Listener { return &limitedListener{Listener: ln, l: l} }

func (l *connLimit) admit(who Caller) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= l.total || l.byUID[who.UID] >= l.perUID {
		if time.Since(l.warned) >= time.Minute {
			l.warned = time.Now()
			l.log.Warn("workload API: connection refused, too many open (said once a minute)",
				"uid", who.UID, "pid", who.PID, "open", l.open, "open_by_uid", l.byUID[who.UID], "max", l.total, "max_per_uid", l.perUID)
		}
		return false
	}
	l.open++
	l.byUID[who.UID]++
	return true
}

func (l *connLimit) done(who Caller) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.byUID[who.UID]--; l.byUID[who.UID] <= 0 {
		delete(l.byUID, who.UID)
	}
}

type limitedListener struct {
	net.Listener
	l *connLimit
}

func (ll *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		who, err := callerOf(c)
		if err != nil || !ll.l.admit(who) {
			_ = c.Close()
			continue
		}
		return &peerConn{Conn: c, who: who, l: ll.l}, nil
	}
}

// peerConn is an admitted connection, its caller as the kernel said when
// it connected, counted until it is closed.
type peerConn struct {
	net.Conn
	who  Caller
	l    *connLimit
	once sync.Once
	// mu guards who.proc, set by the handshake, against Close.
	mu     sync.Mutex
	closed bool
}

// setProc sets what was read of the caller's process, closed with c.
func (c *peerConn) setProc(p *process) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		p.close()
	}
	c.who.proc = p
}

func (c *peerConn) caller() Caller {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.who
}

func (c *peerConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.who.proc.close()
		who := c.who
		c.mu.Unlock()
		c.l.done(who)
	})
	return err
}

// slots bound some work for callers under way at once: total in all,
// and perUID for the callers of one user id. Work that never ends (a
// reading of an executable on a file system its caller serves itself,
// and does not answer) holds its slot for good: one user's then holds
// no more than its own share, and other users' work goes on. A user id
// is kept only while work of its callers holds or waits for a slot.
type slots struct {
	all    chan struct{}
	perUID int

	mu    sync.Mutex
	byUID map[uint32]*uidSlots
}

// uidSlots are one user id's slots, and how many of its callers' works
// hold or wait for one.
type uidSlots struct {
	c     chan struct{}
	users int
}

func newSlots(total, perUID int) *slots {
	return &slots{all: make(chan struct{}, total), perUID: perUID, byUID: map[uint32]*uidSlots{}}
}

// take waits for a slot for a caller of user id uid, first among its
// user's, then among all, no longer than ctx lasts (a free one is taken
// even once it has ended), and is how to give it back.
func (s *slots) take(ctx context.Context, uid uint32) (release func(), err error) {
	s.mu.Lock()
	mine := s.byUID[uid]
	if mine == nil {
		mine = &uidSlots{c: make(chan struct{}, s.perUID)}
		s.byUID[uid] = mine
	}
	mine.users++
	s.mu.Unlock()
	leave := func() {
		s.mu.Lock()
		if mine.users--; mine.users == 0 {
			delete(s.byUID, uid)
		}
		s.mu.Unlock()
	}
	if err := wait(ctx, mine.c); err != nil {
		leave()
		return nil, err
	}
	if err := wait(ctx, s.all); err != nil {
		<-mine.c
		leave()
		return nil, err
	}
	return func() { <-s.all; <-mine.c; leave() }, nil
}

// wait takes a slot of c, one free at once even when ctx has ended,
// else the first one freed while ctx lasts.
func wait(ctx context.Context, c chan struct{}) error {
	select {
	case c <- struct{}{}:
		return nil
	default:
	}
	select {
	case c <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
