package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/syncer"
)

// The client SDK (client/) did not exist when these benchmarks were
// written, so they speak protocol v1 themselves with this small client:
// gws for the WebSocket, protocol for the frames, crdt for replicas. It
// keeps the load generator's own work small: receivers that only measure
// skim Update frames (skimUpdate) instead of decoding them.

// countConn counts the bytes a socket carries, WebSocket framing included.
type countConn struct {
	net.Conn
	rx, tx *atomic.Int64
}

func (c countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.rx.Add(int64(n))
	return n, err
}

func (c countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.tx.Add(int64(n))
	return n, err
}

type countDialer struct {
	d      net.Dialer
	rx, tx *atomic.Int64
	last   *net.Conn
}

func (d countDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := d.d.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	*d.last = c
	return countConn{Conn: c, rx: d.rx, tx: d.tx}, nil
}

// srcIP returns the source address for client i: 127.0.0.2 and up, at most
// perIP clients each, so that the server's per-address cap and the
// ephemeral port range of each address pair are never the limit.
func srcIP(i, perIP int) net.IP {
	n := 2 + i/perIP
	return net.IPv4(127, 0, byte(n>>8), byte(n))
}

// wsClient is one connection of the benchmark client. Frames arrive on
// the gws read goroutine and go to recv; closed is called once when the
// connection ends.
type wsClient struct {
	id     int
	agent  crdt.AgentKey
	conn   *gws.Conn
	nc     net.Conn // the TCP connection under conn, for abrupt closes
	rx, tx atomic.Int64

	wmu sync.Mutex // serialises seq and writes of the sending goroutines
	seq uint64     // client seq of the last Delta sent
	enc *protocol.Encoder
	buf []byte

	recv   func(c *wsClient, kind protocol.Kind, frame []byte)
	closed func(c *wsClient, err error)

	welcome chan struct{}
	done    chan struct{}
	once    sync.Once
	err     error // why it closed, set before done closes
}

type wsHandler struct {
	gws.BuiltinEventHandler
	c *wsClient
}

func (h wsHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	c := h.c
	b := m.Bytes()
	if len(b) < 2 {
		return
	}
	k := protocol.Kind(b[1])
	if k == protocol.KindWelcome {
		select {
		case <-c.welcome:
		default:
			close(c.welcome)
		}
	}
	if c.recv != nil {
		c.recv(c, k, b)
	}
}

func (h wsHandler) OnClose(_ *gws.Conn, err error) {
	c := h.c
	c.once.Do(func() {
		if err == nil {
			err = errors.New("closed")
		}
		c.err = err
		close(c.done)
		if c.closed != nil {
			c.closed(c, err)
		}
	})
}

// agentKey makes a distinct, recognisable agent key for client i of run.
func agentKey(run uint32, i int) crdt.AgentKey {
	var k crdt.AgentKey
	k[0], k[1] = 'w', 'b'
	binary.BigEndian.PutUint32(k[4:8], uint32(i))
	binary.BigEndian.PutUint32(k[8:12], run)
	k[15] = 1
	return k
}

// clientOf recovers i from a key made by agentKey.
func clientOf(k []byte) (int, bool) {
	if len(k) != 16 || k[0] != 'w' || k[1] != 'b' {
		return 0, false
	}
	return int(binary.BigEndian.Uint32(k[4:8])), true
}

// refusedError is an HTTP refusal of the upgrade (429, 503): admission
// control, with the server's Retry-After.
type refusedError struct {
	status int
	retry  time.Duration
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("upgrade refused: HTTP %d, retry after %v", e.status, e.retry)
}

type dialOpts struct {
	url    string
	src    net.IP // nil: the kernel picks
	agent  crdt.AgentKey
	id     int
	recv   func(c *wsClient, kind protocol.Kind, frame []byte)
	closed func(c *wsClient, err error)
}

// dial opens a connection and sends Hello; it does not wait for Welcome.
func dial(o dialOpts) (*wsClient, error) {
	c := &wsClient{id: o.id, agent: o.agent, recv: o.recv, closed: o.closed, enc: protocol.NewEncoder(),
		welcome: make(chan struct{}), done: make(chan struct{})}
	d := countDialer{d: net.Dialer{Timeout: 10 * time.Second}, rx: &c.rx, tx: &c.tx, last: &c.nc}
	if o.src != nil {
		d.d.LocalAddr = &net.TCPAddr{IP: o.src}
	}
	conn, resp, err := gws.NewClient(wsHandler{c: c}, &gws.ClientOption{
		Addr:                o.url,
		RequestHeader:       http.Header{"Sec-WebSocket-Protocol": []string{syncer.Subprotocol}},
		ReadMaxPayloadSize:  protocol.MaxFrameBytes * 2,
		WriteMaxPayloadSize: protocol.MaxFrameBytes,
		HandshakeTimeout:    10 * time.Second,
		NewDialer:           func() (gws.Dialer, error) { return d, nil },
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			retry := time.Second
			if s, aerr := strconv.Atoi(resp.Header.Get("Retry-After")); aerr == nil {
				retry = time.Duration(s) * time.Second
			}
			return nil, &refusedError{status: resp.StatusCode, retry: retry}
		}
		return nil, err
	}
	c.conn = conn
	go conn.ReadLoop()
	if err := c.send(&protocol.Hello{Client: "weft-bench", Agent: o.agent, User: protocol.User{Name: fmt.Sprintf("bench-%d", o.id)}}); err != nil {
		c.abort()
		return nil, err
	}
	return c, nil
}

// send encodes and writes one frame (synchronously, so that a sender
// feels the socket's backpressure).
func (c *wsClient) send(f protocol.Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.sendLocked(f)
}

func (c *wsClient) sendLocked(f protocol.Frame) error {
	b, err := c.enc.Encode(c.buf[:0], f)
	if err != nil {
		return err
	}
	c.buf = b
	return c.conn.WriteMessage(gws.OpcodeBinary, b)
}

// sendDelta numbers a delta with the next client seq and sends it; before
// runs just before the write, with the seq, under the write lock.
func (c *wsClient) sendDelta(doc string, d crdt.Delta, before func(seq uint64)) (uint64, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.seq++
	if before != nil {
		before(c.seq)
	}
	return c.seq, c.sendLocked(&protocol.Delta{Doc: doc, ClientSeq: c.seq, Delta: d})
}

// close says goodbye with 1000 and waits (bounded) for the read loop to end.
func (c *wsClient) close() {
	_ = c.conn.WriteClose(1000, nil)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.abort()
	}
}

// abort drops the TCP connection without a close frame, as a network
// failure or a killed process would.
func (c *wsClient) abort() {
	if c.nc != nil {
		_ = c.nc.Close()
	}
}

// --- skimming Update frames --------------------------------------------------

// skimmer reads just enough of an Update frame to time it: the ops'
// authors and seqs. It allocates nothing.
type skimmer struct {
	b   []byte
	bad bool
}

func (s *skimmer) byte() byte {
	if len(s.b) == 0 {
		s.bad = true
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

func (s *skimmer) take(n int) []byte {
	if n < 0 || len(s.b) < n {
		s.bad = true
		s.b = nil
		return nil
	}
	p := s.b[:n]
	s.b = s.b[n:]
	return p
}

func (s *skimmer) be(n int) uint64 {
	var v uint64
	for _, c := range s.take(n) {
		v = v<<8 | uint64(c)
	}
	return v
}

// int reads any msgpack integer as int64.
func (s *skimmer) int() int64 {
	c := s.byte()
	switch {
	case c <= 0x7f:
		return int64(c)
	case c >= 0xe0:
		return int64(int8(c))
	}
	switch c {
	case 0xcc:
		return int64(s.be(1))
	case 0xcd:
		return int64(s.be(2))
	case 0xce:
		return int64(s.be(4))
	case 0xcf:
		return int64(s.be(8))
	case 0xd0:
		return int64(int8(s.be(1)))
	case 0xd1:
		return int64(int16(s.be(2)))
	case 0xd2:
		return int64(int32(s.be(4)))
	case 0xd3:
		return int64(s.be(8))
	}
	s.bad = true
	return 0
}

func (s *skimmer) arrayLen() int {
	c := s.byte()
	switch {
	case c&0xf0 == 0x90:
		return int(c & 0x0f)
	case c == 0xdc:
		return int(s.be(2))
	case c == 0xdd:
		return int(s.be(4))
	}
	s.bad = true
	return 0
}

// raw skips or returns a str or bin.
func (s *skimmer) raw() []byte {
	c := s.byte()
	switch {
	case c&0xe0 == 0xa0:
		return s.take(int(c & 0x1f))
	case c == 0xd9 || c == 0xc4:
		return s.take(int(s.be(1)))
	case c == 0xda || c == 0xc5:
		return s.take(int(s.be(2)))
	case c == 0xdb || c == 0xc6:
		return s.take(int(s.be(4)))
	}
	s.bad = true
	return nil
}

// skimUpdate calls fn for each insert or delete op of an Update frame with
// its author's key and the seqs it covers. It reports whether the frame
// parsed.
func skimUpdate(frame []byte, fn func(author []byte, seq, n uint64)) bool {
	s := skimmer{b: frame}
	if s.arrayLen() < 5 || s.int() != int64(protocol.KindUpdate) {
		return false
	}
	s.raw() // doc
	s.int() // seq
	s.raw() // author
	if s.arrayLen() < 2 {
		return false
	}
	var agents [8][]byte
	na := s.arrayLen()
	if na > len(agents) {
		return false
	}
	for i := range na {
		agents[i] = s.raw()
	}
	nops := s.arrayLen()
	for range nops {
		fields := s.arrayLen()
		s.int() // kind
		a := s.int()
		seq := s.int()
		s.int() // lamport
		n := s.int()
		for range fields - 5 {
			c := s.b
			if len(c) > 0 && (c[0]&0xe0 == 0xa0 || c[0] == 0xd9 || c[0] == 0xda || c[0] == 0xdb) {
				s.raw()
			} else {
				s.int()
			}
		}
		if s.bad || a < 0 || int(a) >= na {
			return false
		}
		fn(agents[a], uint64(seq), uint64(n))
	}
	return !s.bad
}

// ackSeq returns the client seq of an Ack frame.
func ackSeq(frame []byte) (uint64, bool) {
	s := skimmer{b: frame}
	if s.arrayLen() < 4 || s.int() != int64(protocol.KindAck) {
		return 0, false
	}
	s.raw()
	cs := s.int()
	return uint64(cs), !s.bad
}
