package syncer

// The write path of a WebSocket connection. gws writes each frame with
// one write(2), and fan-out sends many small frames to every peer, so
// written through gws the server spends most of its time in write
// syscalls. Instead, wsPeer.Send appends the frame to the peer's outbox,
// and one job on the connection's gws write queue (the one that also
// carries pings and close frames, so order holds) frames everything the
// outbox holds and writes it at once. A frame sent to an idle peer leaves
// as soon as that job runs, as before; frames that arrive while the job is
// busy leave together in its next write. Nothing waits for company.

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
)

const (
	// writeBatch is the size past which a drain writes what it has
	// framed and starts a new write.
	writeBatch = 64 << 10
	// writeInline is the largest payload copied into a write; a larger
	// one is written beside it (writev), not copied.
	writeInline = 4 << 10
	// keepOutbox is the capacity of an outbox slice kept for reuse;
	// larger ones, left by a backlog, go back to the collector.
	keepOutbox = 256
)

var errCloseSent = errors.New("syncer: close frame already sent")

// batchPool holds the buffers drains frame into; a drain holds one only
// while it writes, so idle connections keep none.
var batchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, writeInline)
	return &b
}}

// wsSocket is the net.Conn under a gws connection. gws writes the
// handshake response and the control frames through Write; drains write
// data frames through writeData. The mutex keeps every write whole, and
// once a close frame has gone out, no data frame follows it. Deadlines
// are the embedded connection's, so SetWriteDeadline bounds a drain's
// write as it bounded gws's own.
type wsSocket struct {
	net.Conn
	writes atomic.Int64 // writes to the connection, for tests

	mu        sync.Mutex
	closeSent bool
	err       error // the first failed write, returned by every later one
}

// isCloseFrame reports whether b, one whole frame as gws writes them, is a
// close frame (FIN and opcode 8). The handshake response ("HTTP/1.1 …")
// is not.
func isCloseFrame(b []byte) bool { return len(b) > 0 && b[0] == 0x88 }

func (s *wsSocket) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	if isCloseFrame(b) {
		s.closeSent = true
	}
	s.writes.Add(1)
	n, err := s.Conn.Write(b)
	if err != nil {
		s.err = err // gws closes the connection on it
	}
	return n, err
}

// writeData writes whole data frames, b and then big (which may be nil),
// in one write where the connection allows it. A failed write closes the
// connection: the read loop ends on it, and gws reports the close.
func (s *wsSocket) writeData(b, big []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.err != nil:
		return s.err
	case s.closeSent:
		return errCloseSent
	}
	s.writes.Add(1)
	var err error
	if big == nil {
		_, err = s.Conn.Write(b)
	} else {
		bufs := net.Buffers{b, big}
		_, err = bufs.WriteTo(s.Conn) // writev on a TCP connection
	}
	if err != nil {
		s.err = err
		_ = s.Conn.Close()
	}
	return err
}

// Close closes the connection first, which ends a write stuck on a peer
// that does not read, then fails every later write.
func (s *wsSocket) Close() error {
	err := s.Conn.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = net.ErrClosed
	}
	return err
}

// appendFrameHeader appends the header of a server data frame: FIN,
// binary, unmasked, the shortest length encoding (RFC 6455 §5.2), as gws
// writes them.
func appendFrameHeader(b []byte, n int) []byte {
	switch {
	case n <= 125:
		return append(b, 0x82, byte(n))
	case n <= 0xFFFF:
		return append(b, 0x82, 126, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0x82, 127), uint64(n))
	}
}

// outbox is a peer's queue of frames not yet taken by a drain.
type outbox struct {
	mu       sync.Mutex
	frames   [][]byte
	spare    [][]byte // the slice the last drain emptied, for reuse
	draining bool     // a drain is queued or running
}

// push appends a frame and reports whether the caller must queue a drain.
func (o *outbox) push(b []byte) (start bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.frames = append(o.frames, b)
	start = !o.draining
	o.draining = true
	return start
}

// take returns the queued frames, or nil when there are none, in which
// case the drain ends.
func (o *outbox) take() [][]byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	f := o.frames
	if len(f) == 0 {
		o.draining = false
		return nil
	}
	o.frames, o.spare = o.spare, nil
	return f
}

// recycle keeps an emptied slice for the next take.
func (o *outbox) recycle(f [][]byte) {
	if cap(f) > keepOutbox {
		return
	}
	clear(f) // drop the payloads
	o.mu.Lock()
	if o.spare == nil {
		o.spare = f[:0]
	}
	o.mu.Unlock()
}

// drain runs on the connection's write queue. It writes what the outbox
// holds, again and again until it is empty, and credits the send budget
// as bytes reach the socket.
func (p *wsPeer) drain() {
	for {
		frames := p.out.take()
		if frames == nil {
			return
		}
		p.writeFrames(frames)
		p.out.recycle(frames)
	}
}

// writeFrames frames and writes a batch in writes of about writeBatch
// bytes. When a write fails the rest is dropped: the connection is
// closing.
func (p *wsPeer) writeFrames(frames [][]byte) {
	bp := batchPool.Get().(*[]byte)
	buf := (*bp)[:0]
	var held, dropped int64 // payload bytes in buf; bytes not written
	var err error
	for i, f := range frames {
		if err != nil {
			dropped += int64(len(f))
			continue
		}
		buf = appendFrameHeader(buf, len(f))
		var big []byte
		if len(f) > writeInline {
			big = f
		} else {
			buf = append(buf, f...)
		}
		held += int64(len(f))
		if big != nil || len(buf) >= writeBatch || i == len(frames)-1 {
			err = p.sock.writeData(buf, big)
			p.pending.Add(-held)
			buf, held = buf[:0], 0
		}
	}
	p.pending.Add(-dropped)
	if cap(buf) <= 2*writeBatch {
		*bp = buf[:0]
		batchPool.Put(bp)
	}
}
