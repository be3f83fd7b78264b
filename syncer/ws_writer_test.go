package syncer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lxzan/gws"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// wsTestServer is a Server with no documents behind a real listener, and
// a gws client connected to it.
func wsTestServer(t *testing.T, h gws.Event) (*Server, *wsPeer) {
	t.Helper()
	srv := NewServer(NewHub(nil, Options{}), ServerOptions{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ws", srv.ServeWS)
	hs := httptest.NewServer(mux)
	cc, _, err := gws.NewClient(h, &gws.ClientOption{
		Addr:          "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/ws",
		RequestHeader: http.Header{"Sec-WebSocket-Protocol": {Subprotocol}},
	})
	if err != nil {
		t.Fatal(err)
	}
	go cc.ReadLoop()
	t.Cleanup(func() {
		_ = cc.NetConn().Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, ErrClosed) {
			t.Error(err)
		}
		hs.Close()
	})
	// The client has the handshake response before the server has
	// stored the connection.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		srv.mu.Lock()
		for p := range srv.conns {
			if p.conn.Load() != nil {
				srv.mu.Unlock()
				return srv, p
			}
		}
		srv.mu.Unlock()
	}
	t.Fatal("no connection")
	return nil, nil
}

// recorder is a gws client handler that keeps the binary messages it
// receives and says when it has want of them.
type recorder struct {
	gws.BuiltinEventHandler
	mu   sync.Mutex
	got  [][]byte
	want int
	done chan struct{}
}

func newRecorder(want int) *recorder { return &recorder{want: want, done: make(chan struct{})} }

func (r *recorder) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, append([]byte(nil), m.Bytes()...))
	if len(r.got) == r.want {
		close(r.done)
	}
}

// numbered is a payload of size bytes that starts with i.
func numbered(i, size int) []byte {
	b := bytes.Repeat([]byte{byte(i)}, size)
	binary.BigEndian.PutUint32(b, uint32(i))
	return b
}

// TestServer_BurstCoalesced sends a burst of frames to one peer through
// wsPeer.Send, the hub's path, while the peer's write queue is busy (as a
// loaded server's is): they arrive complete and in order, one message
// each, in a handful of socket writes instead of one per frame, and the
// send budget is whole again once they are written.
func TestServer_BurstCoalesced(t *testing.T) {
	const frames, size = 2000, 100
	rec := newRecorder(frames)
	_, p := wsTestServer(t, rec)
	release := make(chan struct{})
	p.conn.Load().Async(func() { <-release })
	before := p.sock.writes.Load()
	total := 0
	for i := range frames {
		if !p.Send(numbered(i, size)) {
			t.Fatalf("frame %d not queued", i)
		}
		total += 2 + size // a 2-byte header each
	}
	close(release)
	<-rec.done
	writes := p.sock.writes.Load() - before
	for i, b := range rec.got {
		if !bytes.Equal(b, numbered(i, size)) {
			t.Fatalf("message %d carries frame %d (%d bytes)", i, binary.BigEndian.Uint32(b), len(b))
		}
	}
	// One write per writeBatch bytes, and one for the rest.
	if most := int64(total/writeBatch + 1); writes > most {
		t.Fatalf("%d frames took %d writes, want at most %d", frames, writes, most)
	}
	t.Logf("%d frames, %d bytes: %d writes", frames, total, writes)
	for p.pending.Load() != 0 {
		time.Sleep(time.Millisecond) // the credit follows the write
	}
}

// TestServer_FramesOfEverySize: payloads on both sides of every length
// encoding and of writeInline arrive intact, in order, and as sent, with
// pings from the heartbeat's path mixed in.
func TestServer_FramesOfEverySize(t *testing.T) {
	sizes := []int{4, 125, 126, 127, writeInline, writeInline + 1, 0xFFFF, 0x10000, 300 << 10, 5}
	rec := newRecorder(3 * len(sizes))
	_, p := wsTestServer(t, rec)
	var sent [][]byte
	release := make(chan struct{})
	p.conn.Load().Async(func() { <-release })
	for round := range 3 {
		for i, n := range sizes {
			b := numbered(round*len(sizes)+i, n)
			sent = append(sent, b)
			if !p.Send(b) {
				t.Fatal("not queued")
			}
			if i == 3 {
				p.ping()
			}
		}
		if round == 0 {
			close(release)
		}
	}
	<-rec.done
	for i := range sent {
		if !bytes.Equal(rec.got[i], sent[i]) {
			t.Fatalf("message %d (%d bytes) differs from frame %d (%d bytes)", i, len(rec.got[i]), i, len(sent[i]))
		}
	}
}

// TestWSSocket_NoDataAfterClose: once a close frame is out, a drain
// writes nothing more.
func TestWSSocket_NoDataAfterClose(t *testing.T) {
	srv, cli := net.Pipe()
	defer cli.Close()
	s := &wsSocket{Conn: srv}
	got := make(chan []byte)
	go func() { b, _ := io.ReadAll(cli); got <- b }()
	if err := s.writeData(appendFrameHeader(nil, 0), nil); err != nil {
		t.Fatal(err)
	}
	closeFrame := []byte{0x88, 2, 0x03, 0xe9}
	if _, err := s.Write(closeFrame); err != nil {
		t.Fatal(err)
	}
	if err := s.writeData(appendFrameHeader(nil, 0), nil); !errors.Is(err, errCloseSent) {
		t.Fatalf("data after the close frame: %v", err)
	}
	_ = s.Close()
	if b := <-got; !bytes.Equal(b, append([]byte{0x82, 0}, closeFrame...)) {
		t.Fatalf("wire %x", b)
	}
}

// TestPeer_StuckDrain: frames to a peer that does not read count against
// the budget until written; the write fails at the write deadline, which
// closes the socket and gives the budget back.
func TestPeer_StuckDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, cli := net.Pipe()
		defer cli.Close()
		p := &wsPeer{sock: &wsSocket{Conn: srv}}
		for i := range 10 {
			b := numbered(i, 1000)
			p.pending.Add(int64(len(b)))
			p.out.push(b)
		}
		_ = p.sock.SetWriteDeadline(time.Now().Add(time.Second))
		done := make(chan struct{})
		go func() { defer close(done); p.drain() }()
		synctest.Wait() // the drain is blocked on the pipe
		if got := p.pending.Load(); got != 10000 {
			t.Fatalf("pending %d while nothing is read, want 10000", got)
		}
		start := time.Now()
		<-done
		if d := time.Since(start); d != time.Second {
			t.Fatalf("the drain returned after %v, want the 1 s deadline", d)
		}
		if got := p.pending.Load(); got != 0 {
			t.Fatalf("pending %d after the write failed", got)
		}
		if _, err := cli.Read(make([]byte, 1)); err == nil {
			t.Fatal("the socket is still open")
		}
		if p.out.push(numbered(0, 10)) != true {
			t.Fatal("the outbox still thinks a drain runs")
		}
	})
}

// TestServer_FramePipelinedWithUpgrade: a client that sends its Hello in
// the same write as the upgrade request is answered: the bytes net/http
// read past the request reach gws.
func TestServer_FramePipelinedWithUpgrade(t *testing.T) {
	srv := NewServer(NewHub(nil, Options{}), ServerOptions{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ws", srv.ServeWS)
	hs := httptest.NewServer(mux)
	defer hs.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	nc, err := net.Dial("tcp", strings.TrimPrefix(hs.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	hello, err := protocol.Encode(nil, &protocol.Hello{Client: "pipelined", Agent: crdt.AgentKey{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	// A masked client frame (RFC 6455 §5.3), with a zero mask.
	req := "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Protocol: " + Subprotocol + "\r\n\r\n"
	out := append([]byte(req), 0x82, 0x80|byte(len(hello)), 0, 0, 0, 0)
	if _, err := nc.Write(append(out, hello...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		t.Fatal(err)
	}
	n := int(hdr[1])
	if n == 126 {
		var ext [2]byte
		if _, err := io.ReadFull(br, ext[:]); err != nil {
			t.Fatal(err)
		}
		n = int(binary.BigEndian.Uint16(ext[:]))
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatal(err)
	}
	f, err := protocol.Decode(payload)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.(*protocol.Welcome); hdr[0] != 0x82 || !ok {
		t.Fatalf("first frame %#x %T, want a binary Welcome", hdr[0], f)
	}
}
