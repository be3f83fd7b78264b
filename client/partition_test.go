package client_test

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-sync/weft/client"
	"github.com/weft-sync/weft/syncer"
)

type proxyMode int

const (
	pass  proxyMode = iota // forward
	cut                    // close every link, refuse new ones
	delay                  // forward each chunk after a delay
	drop                   // blackhole: accept and discard, forward nothing
)

// proxy is a loopback TCP proxy whose links can be cut, delayed or
// blackholed. A link that lost data in drop mode stays silent for good:
// its byte stream is broken, and the endpoints must notice and redial.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	mode  proxyMode
	lag   time.Duration
	links map[*link]struct{}
	wg    sync.WaitGroup

	accepted atomic.Int64
}

type link struct {
	a, b     net.Conn
	once     sync.Once
	poisoned atomic.Bool
}

func (l *link) close() {
	l.once.Do(func() {
		_ = l.a.Close()
		_ = l.b.Close()
	})
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, links: make(map[*link]struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) url() string { return "ws://" + p.ln.Addr().String() + "/v1/ws" }

func (p *proxy) set(m proxyMode, lag time.Duration) {
	p.mu.Lock()
	p.mode, p.lag = m, lag
	var victims []*link
	for l := range p.links {
		switch m {
		case cut:
			victims = append(victims, l)
		case drop:
			l.poisoned.Store(true)
		}
	}
	p.mu.Unlock()
	for _, l := range victims {
		l.close()
	}
}

func (p *proxy) state() (proxyMode, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.lag
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		a, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		if m, _ := p.state(); m == cut {
			_ = a.Close()
			continue
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = a.Close()
			continue
		}
		l := &link{a: a, b: b}
		p.mu.Lock()
		if p.mode == drop {
			l.poisoned.Store(true)
		}
		p.links[l] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pump(l, a, b)
		go p.pump(l, b, a)
	}
}

func (p *proxy) pump(l *link, src, dst net.Conn) {
	defer p.wg.Done()
	defer func() {
		l.close()
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !l.poisoned.Load() {
			if _, lag := p.state(); lag > 0 {
				time.Sleep(lag)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) close() {
	_ = p.ln.Close()
	p.set(cut, 0)
	p.wg.Wait()
}

// TestPartitionConverges: clients behind a proxy keep editing while their
// links are cut, slowed, blackholed and restored; a client with a direct
// link edits throughout. Everyone converges on the server's text.
func TestPartitionConverges(t *testing.T) {
	ts := startServer(t, syncer.ServerOptions{})
	px := startProxy(t, ts.addr)
	docIDs := []string{"p1", "p2"}
	var clients []*client.Client
	var docs []*client.Doc
	for i := range 4 {
		url := px.url()
		if i == 3 {
			url = ts.url() // the direct one
		}
		c := mustDial(t, url, fastOptions())
		clients = append(clients, c)
		for _, id := range docIDs {
			docs = append(docs, mustOpen(t, c, id))
		}
	}
	var logs []*errLog
	for _, c := range clients {
		logs = append(logs, collectErrors(c))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 99))
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(5+r.IntN(10)) * time.Millisecond):
				}
				d := docs[i*len(docIDs)+r.IntN(len(docIDs))]
				if err := randomEdit(r, d); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	schedule := []struct {
		mode proxyMode
		lag  time.Duration
		for_ time.Duration
	}{
		{pass, 0, 300 * time.Millisecond},
		{cut, 0, 400 * time.Millisecond},
		{pass, 0, 300 * time.Millisecond},
		{delay, 60 * time.Millisecond, 500 * time.Millisecond},
		{drop, 0, 1200 * time.Millisecond},
		{pass, 0, 400 * time.Millisecond},
		{cut, 0, 200 * time.Millisecond},
		{delay, 30 * time.Millisecond, 300 * time.Millisecond},
		{drop, 0, 300 * time.Millisecond}, // healed before anyone notices
		{pass, 0, 200 * time.Millisecond},
	}
	for _, s := range schedule {
		px.set(s.mode, s.lag)
		time.Sleep(s.for_)
	}
	close(stop)
	wg.Wait()
	px.set(pass, 0)
	// Group replicas by document and require convergence.
	for k, id := range docIDs {
		var group []*client.Doc
		for i := range clients {
			group = append(group, docs[i*len(docIDs)+k])
		}
		text := converged(t, 20*time.Second, group...)
		if got := serverText(t, ts.url(), id); got != text {
			t.Fatalf("%s: server %q, clients %q", id, got, text)
		}
		t.Logf("%s: %d code points", id, len([]rune(text)))
	}
	for i, c := range clients[:3] {
		if st := c.Stats(); st.Reconnects < 2 {
			t.Errorf("client %d: stats %+v, want reconnects across cuts", i, st)
		}
	}
	for _, c := range clients {
		_ = c.Close()
	}
	for i, l := range logs {
		l.wg.Wait()
		for _, err := range l.unexpected() {
			t.Errorf("client %d: %v", i, err)
		}
	}
}
