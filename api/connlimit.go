package api

import (
	"container/list"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"mandate.dev/mandate/authority"
)

// connLimit bounds the connections one listener holds open at once
// (http.max_connections): each costs memory (some 70 KB once it has
// answered a request), and anyone may open them. At the limit, a new
// connection is taken in place of the one idle the longest between
// requests, which is closed (as http.idle_timeout would close it later;
// a client reconnects); with none idle, the new connection is closed at
// once, unanswered. Connections still in their handshake or reading a
// request are bounded in time by the http timeouts, not closed for
// another.
type connLimit struct {
	max   int
	log   *slog.Logger
	shed  *prometheus.CounterVec // by how: idle_closed, refused
	gauge prometheus.Gauge       // connections open (of every listener)

	mu   sync.Mutex
	open int
	// idle are the connections idle between requests, the longest idle
	// first, and where each is in that list.
	idle   *list.List
	idleAt map[net.Conn]*list.Element
	// warned is when the limit was last said in the server log (once a
	// minute at most: a flood of connections must not flood the log).
	warned time.Time
}

func newConnLimit(max int, log *slog.Logger, m *metrics) *connLimit {
	if max <= 0 { // a config whose defaults were not set
		max = authority.DefaultMaxConnections
	}
	return &connLimit{max: max, log: log, shed: m.connsShed, gauge: m.connsOpen, idle: list.New(), idleAt: map[net.Conn]*list.Element{}}
}

// listen is ln with the limit: what it accepts past the limit is
// handled as connLimit says.
func (l *connLimit) listen(ln net.Listener) net.Listener { return &limitedListener{Listener: ln, l: l} }

// state follows a connection's state (http.Server.ConnState): which are
// idle, and since when.
func (l *connLimit) state(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.idleAt[c]; ok {
		l.idle.Remove(e)
		delete(l.idleAt, c)
	}
	if s == http.StateIdle {
		l.idleAt[c] = l.idle.PushBack(c)
	}
}

// admit counts a new connection in, closing the longest idle one for it
// at the limit; false: none is idle, and the new one is refused.
func (l *connLimit) admit() bool {
	l.mu.Lock()
	if l.open < l.max {
		l.open++
		l.mu.Unlock()
		l.gauge.Inc()
		return true
	}
	var victim net.Conn
	if e := l.idle.Front(); e != nil {
		victim = l.idle.Remove(e).(net.Conn)
		delete(l.idleAt, victim)
		// Counted out when it is closed (countedConn); the new one is
		// counted in now, over the limit by the closes under way.
		l.open++
	}
	how := "refused"
	if victim != nil {
		how = "idle_closed"
	}
	warn := time.Since(l.warned) >= time.Minute
	if warn {
		l.warned = time.Now()
	}
	l.mu.Unlock()
	l.shed.WithLabelValues(how).Inc()
	if warn {
		l.log.Warn("connection limit reached (http.max_connections): the longest idle connection is closed for a new one, or the new one refused when none is idle; said once a minute, counted in mandate_http_connections_shed_total",
			"max_connections", l.max, "how", how)
	}
	if victim == nil {
		return false
	}
	l.gauge.Inc()
	// Its socket, not its TLS connection: that would first write a
	// close_notify, which a peer that reads nothing could hold up to
	// the write deadline. Its server goroutine then ends on the error.
	if tc, ok := victim.(interface{ NetConn() net.Conn }); ok {
		victim = tc.NetConn()
	}
	_ = victim.Close()
	return true
}

// done counts a connection out.
func (l *connLimit) done() {
	l.mu.Lock()
	l.open--
	l.mu.Unlock()
	l.gauge.Dec()
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
		if ll.l.admit() {
			return &countedConn{Conn: c, l: ll.l}, nil
		}
		_ = c.Close()
	}
}

// countedConn is a connection counted in its limit until it is closed.
type countedConn struct {
	net.Conn
	l    *connLimit
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.l.done)
	return err
}
