package main

// End-to-end tests of `weft serve`: the binary TestMain builds runs as a
// child process on 127.0.0.1 (port 0), and the tests talk to it over real
// HTTP and WebSocket connections. Every wait polls with a deadline; no test
// sleeps for synchronization.

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/weft-sync/weft/auth"
	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/syncer"
)

// waitLimit bounds every wait in these tests.
const waitLimit = 20 * time.Second

// --- the child process -------------------------------------------------------

// weftProc is a running `weft serve`.
type weftProc struct {
	t   testing.TB
	cmd *exec.Cmd
	url string // http(s)://127.0.0.1:PORT (no trailing slash)
	ws  string // ws(s)://127.0.0.1:PORT/v1/ws

	mu      sync.Mutex
	lines   []string
	changed chan struct{}

	done chan struct{} // closed when the process has exited
	code int           // exit status, valid after done
}

// childEnv is the test's environment without any WEFT_ variable, plus env.
func childEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WEFT_") {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// launch starts `weft serve args...` and returns at once.
func launch(t testing.TB, env []string, args ...string) *weftProc {
	t.Helper()
	cmd := exec.Command(weftBin, append([]string{"serve", "--log-format", "text"}, args...)...)
	cmd.Env = childEnv(env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &weftProc{t: t, cmd: cmd, changed: make(chan struct{}, 1), done: make(chan struct{})}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			p.notify()
		}
	}()
	go func() {
		<-scanned // Wait closes the pipe; read it all first
		err := cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		if err != nil && p.code == 0 {
			p.code = -1
		}
		close(p.done)
		p.notify()
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("weft serve log:\n%s", p.log())
		}
	})
	return p
}

var urlRE = regexp.MustCompile(`msg=listening url=(\S+)/ ws=(\S+)`)

// startServe launches the server and waits until it listens.
func startServe(t testing.TB, env []string, args ...string) *weftProc {
	t.Helper()
	p := launch(t, env, args...)
	line := p.waitLog("msg=listening")
	m := urlRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no URL in the listening line %q", line)
	}
	p.url, p.ws = m[1], m[2]
	return p
}

func (p *weftProc) notify() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

func (p *weftProc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// waitLog returns the first log line containing s, failing if the process
// exits or the deadline passes first.
func (p *weftProc) waitLog(s string) string {
	p.t.Helper()
	deadline := time.After(waitLimit)
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if strings.Contains(l, s) {
				p.mu.Unlock()
				return l
			}
		}
		p.mu.Unlock()
		select {
		case <-p.done:
			// The last lines may have arrived with the exit.
			if l := p.findLog(s); l != "" {
				return l
			}
			p.t.Fatalf("weft serve exited (status %d) before logging %q", p.code, s)
		case <-p.changed:
		case <-deadline:
			p.t.Fatalf("timed out waiting for %q in the log", s)
		}
	}
}

func (p *weftProc) findLog(s string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

func (p *weftProc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait returns the exit status, failing if the process does not exit in
// time.
func (p *weftProc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(waitLimit):
		p.t.Fatal("weft serve did not exit in time")
		return 0
	}
}

// stop sends SIGTERM and requires a clean exit.
func (p *weftProc) stop() {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		p.t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
}

// runServe runs `weft serve` expecting it to exit by itself.
func runServe(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	p := launch(t, env, args...)
	return p.wait(), p.log()
}

// --- HTTP helpers ----------------------------------------------------------------

func get(t *testing.T, c *http.Client, url string) (int, http.Header, string) {
	t.Helper()
	if c == nil {
		c = &http.Client{Timeout: waitLimit}
	}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// --- a minimal protocol client (mirrors syncer/helpers_test.go) -------------------

type wsClient struct {
	t     testing.TB
	conn  *gws.Conn
	agent crdt.AgentKey
	seq   uint64

	mu      sync.Mutex
	frames  []protocol.Frame
	docs    map[string]*crdt.Text
	acked   map[uint64]uint64 // client seq → server seq
	closed  error             // why the connection ended, once it has
	changed chan struct{}
}

type clientHandler struct {
	gws.BuiltinEventHandler
	c *wsClient
}

func (h clientHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	f, err := protocol.Decode(m.Bytes())
	c := h.c
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.notify()
	if err != nil {
		c.t.Errorf("client got an undecodable frame: %v", err)
		return
	}
	c.frames = append(c.frames, f)
	switch f := f.(type) {
	case *protocol.Sync:
		c.apply(f.Doc, f.Delta)
	case *protocol.Update:
		c.apply(f.Doc, f.Delta)
	case *protocol.Ack:
		c.acked[f.ClientSeq] = f.Seq
	}
}

func (h clientHandler) OnClose(_ *gws.Conn, err error) {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	if err == nil {
		err = errors.New("closed")
	}
	h.c.closed = err
	h.c.notify()
}

func (c *wsClient) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *wsClient) apply(doc string, d crdt.Delta) {
	r := c.docs[doc]
	if r == nil {
		r = crdt.New(c.agent)
		c.docs[doc] = r
	}
	if err := r.Apply(d); err != nil {
		c.t.Errorf("client apply: %v", err)
	}
}

func randomAgent(t testing.TB) crdt.AgentKey {
	var k crdt.AgentKey
	if _, err := rand.Read(k[:]); err != nil {
		t.Fatal(err)
	}
	return k
}

// dialWS opens a WebSocket to url; tlsConf is for wss.
func dialWS(t testing.TB, url string, tlsConf *tls.Config) (*wsClient, *http.Response, error) {
	t.Helper()
	c := &wsClient{t: t, agent: randomAgent(t), docs: map[string]*crdt.Text{}, acked: map[uint64]uint64{}, changed: make(chan struct{}, 1)}
	h := http.Header{}
	h.Set("Sec-WebSocket-Protocol", syncer.Subprotocol)
	conn, resp, err := gws.NewClient(clientHandler{c: c}, &gws.ClientOption{
		Addr: url, RequestHeader: h, ReadMaxPayloadSize: 4 << 20, TlsConfig: tlsConf,
		HandshakeTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, resp, err
	}
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { _ = conn.NetConn().Close() })
	return c, resp, nil
}

// mustHello dials and completes the Hello/Welcome exchange.
func mustHello(t testing.TB, url string, tlsConf *tls.Config) *wsClient {
	t.Helper()
	c, _, err := dialWS(t, url, tlsConf)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.send(&protocol.Hello{Client: "weft-serve-test", Agent: c.agent, User: protocol.User{Name: "tester"}})
	c.waitFor(func() bool { return c.has(protocol.KindWelcome) }, "welcome")
	return c
}

func (c *wsClient) send(f protocol.Frame) {
	c.t.Helper()
	if err := c.trySend(f); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wsClient) trySend(f protocol.Frame) error {
	b, err := protocol.Encode(nil, f)
	if err != nil {
		return err
	}
	return c.conn.WriteMessage(gws.OpcodeBinary, b)
}

func (c *wsClient) has(k protocol.Kind) bool {
	for _, f := range c.frames {
		if f.Kind() == k {
			return true
		}
	}
	return false
}

// waitFor polls cond (called with c.mu held) until it holds.
func (c *wsClient) waitFor(cond func() bool, what string) {
	c.t.Helper()
	deadline := time.After(waitLimit)
	for {
		c.mu.Lock()
		ok := cond()
		closed := c.closed
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-c.changed:
		case <-deadline:
			c.t.Fatalf("timed out waiting for %s (connection: %v)", what, closed)
		}
	}
}

// join subscribes to doc and waits for its initial sync.
func (c *wsClient) join(doc string) {
	c.t.Helper()
	c.mu.Lock()
	if c.docs[doc] == nil {
		c.docs[doc] = crdt.New(c.agent)
	}
	v := c.docs[doc].Version()
	c.mu.Unlock()
	c.send(&protocol.Join{Docs: []protocol.JoinDoc{{Doc: doc, Version: v}}})
	c.waitFor(func() bool {
		for _, f := range c.frames {
			if s, ok := f.(*protocol.Sync); ok && s.Doc == doc && !s.More {
				return true
			}
			if e, ok := f.(*protocol.Error); ok && e.Doc == doc {
				c.t.Fatalf("join %s: %v", doc, e)
			}
		}
		return false
	}, "sync of "+doc)
}

// appendText inserts s at the end of doc locally and sends the delta,
// returning its client seq.
func (c *wsClient) appendText(doc, s string) (uint64, error) {
	c.mu.Lock()
	r := c.docs[doc]
	d, err := r.Insert(r.Len(), s)
	c.seq++
	seq := c.seq
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return seq, c.trySend(&protocol.Delta{Doc: doc, ClientSeq: seq, Delta: d})
}

func (c *wsClient) text(doc string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.docs[doc].String()
}

// readText connects anew and returns the server's text of doc.
func readText(t testing.TB, wsURL, doc string) string {
	t.Helper()
	c := mustHello(t, wsURL, nil)
	c.join(doc)
	s := c.text(doc)
	_ = c.conn.WriteClose(1000, nil)
	return s
}

// requireAPI skips t when the server lacks the HTTP API under /v1/.
func requireAPI(t *testing.T) {
	t.Helper()
	if _, ok := any((*syncer.Server)(nil)).(interface{ APIHandler() http.Handler }); !ok {
		t.Skip("syncer.Server has no APIHandler")
	}
}

// --- tests -----------------------------------------------------------------------

func TestServe_Endpoints(t *testing.T) {
	p := startServe(t, nil, "--addr", "127.0.0.1:0", "--data", t.TempDir())

	if code, _, body := get(t, nil, p.url+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, _, body := get(t, nil, p.url+"/readyz"); code != 200 {
		t.Errorf("/readyz: %d %q", code, body)
	}
	// A connection makes weft_connections 1, which shows the syncer's
	// metrics are the ones registered.
	c := mustHello(t, p.ws, nil)
	c.join("metrics-doc")
	code, _, body := get(t, nil, p.url+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{"weft_connections 1", "weft_store_groups_total", "weft_store_file_bytes", "go_goroutines", "process_open_fds"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	if webAssets == nil {
		code, _, body := get(t, nil, p.url+"/")
		if code != http.StatusNotFound || !strings.Contains(body, "web assets not built") {
			t.Errorf("/ without a web bundle: %d %q", code, body)
		}
	} else {
		for _, path := range []string{"/", "/?doc=notes"} {
			code, h, body := get(t, nil, p.url+path)
			if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(strings.ToLower(body), "<html") {
				t.Errorf("%s: %d %s, %.80q", path, code, h.Get("Content-Type"), body)
			}
		}
		if js, _ := fs.Glob(webAssets, "*.js"); len(js) > 0 {
			code, h, _ := get(t, nil, p.url+"/"+js[0])
			if code != 200 || !strings.Contains(h.Get("Content-Type"), "javascript") || h.Get("ETag") == "" {
				t.Errorf("/%s: %d %s etag %q", js[0], code, h.Get("Content-Type"), h.Get("ETag"))
			}
		}
		if _, err := fs.Stat(webAssets, "dashboard.html"); err == nil {
			if code, h, _ := get(t, nil, p.url+"/dashboard"); code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
				t.Errorf("/dashboard: %d %s", code, h.Get("Content-Type"))
			}
		}
	}
	for _, path := range []string{"/no-such-file.js", "/.gitattributes", "/v1/no-such-endpoint"} {
		if code, _, _ := get(t, nil, p.url+path); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, code)
		}
	}
	p.stop()
	if !strings.Contains(p.log(), "stopped cleanly") {
		t.Error("no clean-stop log line")
	}
}

func TestServe_JSONLogs(t *testing.T) {
	p := launch(t, []string{"WEFT_LOG_LEVEL=debug"}, "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--log-format", "json")
	line := p.waitLog(`"msg":"listening"`)
	var rec struct {
		Level, Msg, URL string
	}
	if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Level != "INFO" || !strings.HasPrefix(rec.URL, "http://127.0.0.1:") {
		t.Errorf("listening line %q: %+v %v", line, rec, err)
	}
	p.stop()
}

func TestServe_NoSyncWarns(t *testing.T) {
	p := startServe(t, []string{"WEFT_NO_SYNC=true"}, "--addr", "127.0.0.1:0", "--data", t.TempDir())
	if l := p.findLog("fsync is OFF"); !strings.Contains(l, "level=WARN") {
		t.Errorf("no loud warning for WEFT_NO_SYNC; log:\n%s", p.log())
	}
	if !strings.Contains(p.findLog("msg=listening"), "durable=false") {
		t.Error("the listening line does not say durable=false")
	}
	p.stop()
}

func TestServe_Help(t *testing.T) {
	stdout, stderr, code := runWeft(t, "serve", "--help")
	if code != 0 {
		t.Fatalf("serve --help: exit %d", code)
	}
	help := stdout + stderr
	for _, env := range []string{"WEFT_ADDR", "WEFT_DATA", "WEFT_JWT_SECRET", "WEFT_JWT_PUBKEY", "WEFT_JWT_ISSUER",
		"WEFT_JWT_AUDIENCE", "WEFT_TLS_CERT", "WEFT_TLS_KEY", "WEFT_INSECURE", "WEFT_LOG_FORMAT", "WEFT_LOG_LEVEL",
		"WEFT_IDLE_TIMEOUT", "WEFT_MEMORY_BUDGET", "WEFT_MAX_DOC_CHARS", "WEFT_OPS_PER_SEC", "WEFT_BYTES_PER_SEC",
		"WEFT_MAX_CONNS_PER_IP", "WEFT_SEND_BUDGET", "WEFT_MAX_DOCS_PER_SOCKET", "WEFT_SNAPSHOT_EVERY", "WEFT_NO_SYNC"} {
		if !strings.Contains(help, "(env "+env+")") {
			t.Errorf("serve --help does not mention %s", env)
		}
	}
	if !strings.Contains(help, `(default "127.0.0.1:8080")`) || !strings.Contains(help, `(default "./weft-data")`) {
		t.Errorf("serve --help lacks the address and data defaults:\n%s", help)
	}
}

func TestServe_LoopbackUnlessAuth(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		for _, addr := range []string{"0.0.0.0:0", ":0"} {
			code, log := runServe(t, nil, "--addr", addr, "--data", t.TempDir())
			if code != 2 || !strings.Contains(log, "without auth") || !strings.Contains(log, "-insecure") {
				t.Errorf("--addr %s: exit %d, log:\n%s", addr, code, log)
			}
		}
	})
	t.Run("env address refused too", func(t *testing.T) {
		code, log := runServe(t, []string{"WEFT_ADDR=0.0.0.0:0"}, "--data", t.TempDir())
		if code != 2 || !strings.Contains(log, "without auth") {
			t.Errorf("exit %d, log:\n%s", code, log)
		}
	})
	t.Run("flag beats env", func(t *testing.T) {
		p := startServe(t, []string{"WEFT_ADDR=0.0.0.0:0"}, "--addr", "127.0.0.1:0", "--data", t.TempDir())
		p.stop()
	})
	// These bind every interface but send no traffic anywhere but to
	// the process's signals.
	t.Run("insecure", func(t *testing.T) {
		p := startServe(t, nil, "--addr", "0.0.0.0:0", "--insecure", "--data", t.TempDir())
		if !strings.Contains(p.log(), "INSECURE") {
			t.Error("no warning about running without auth")
		}
		p.stop()
	})
	t.Run("with auth", func(t *testing.T) {
		p := startServe(t, []string{"WEFT_JWT_SECRET=" + testSecret}, "--addr", "0.0.0.0:0", "--data", t.TempDir())
		p.stop()
	})
}

func TestServe_BadConfig(t *testing.T) {
	cases := []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{"WEFT_OPS_PER_SEC=fast"}, nil, "WEFT_OPS_PER_SEC"},
		{[]string{"WEFT_MEMORY_BUDGET=lots"}, nil, "WEFT_MEMORY_BUDGET"},
		{[]string{"WEFT_JWT_SECRET=short"}, nil, "at least 32"},
		{nil, []string{"--log-format", "xml"}, "log-format"},
		{nil, []string{"--tls-cert", "x.pem"}, "go together"},
		{nil, []string{"--max-docs-per-socket", "100000"}, "max-docs-per-socket"},
	}
	for _, c := range cases {
		args := append([]string{"--addr", "127.0.0.1:0", "--data", t.TempDir()}, c.args...)
		code, log := runServe(t, c.env, args...)
		if code != 2 || !strings.Contains(log, c.want) {
			t.Errorf("env %q args %q: exit %d, want 2 and %q in:\n%s", c.env, c.args, code, c.want, log)
		}
	}
}

func TestServe_DataDirLocked(t *testing.T) {
	dir := t.TempDir()
	p := startServe(t, nil, "--addr", "127.0.0.1:0", "--data", dir)
	code, log := runServe(t, nil, "--addr", "127.0.0.1:0", "--data", dir)
	if code != 1 || !strings.Contains(log, "in use") {
		t.Errorf("second server on the same data: exit %d, log:\n%s", code, log)
	}
	p.stop()
}

func TestServe_CreatesDataDirPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "data")
	p := startServe(t, nil, "--addr", "127.0.0.1:0", "--data", dir)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("data dir mode %o, want 700", perm)
	}
	if _, err := os.Stat(filepath.Join(dir, "weft.db")); err != nil {
		t.Error(err)
	}
	p.stop()
}

const testSecret = "0123456789abcdef0123456789abcdef-test-secret"

func TestServe_Auth(t *testing.T) {
	env := []string{"WEFT_JWT_SECRET=" + testSecret}
	p := startServe(t, env, "--addr", "127.0.0.1:0", "--data", t.TempDir())

	_, resp, err := dialWS(t, p.ws, nil)
	if err == nil {
		t.Fatal("upgrade without a token succeeded")
	}
	if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("upgrade without a token: %v (response %v), want 401", err, resp)
	}
	_, resp, err = dialWS(t, p.ws+"?token=not.a.jwt", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("upgrade with a bad token: %v, want 401", err)
	}

	// A token from `weft token`, with the secret from the same env var.
	cmd := exec.Command(weftBin, "token", "--sub", "u1", "--name", "Ada", "--docs", "notes/*=rw,readme=r", "--ttl", "1h")
	cmd.Env = childEnv(env...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("weft token: %v", err)
	}
	tok := strings.TrimSpace(string(out))
	c := mustHello(t, p.ws+"?token="+tok, nil)
	c.join("notes/a")
	if _, err := c.appendText("notes/a", "hi"); err != nil {
		t.Fatal(err)
	}
	c.waitFor(func() bool { return len(c.acked) == 1 }, "ack of an edit the token allows")
	// The token grants nothing outside its patterns.
	c.send(&protocol.Join{Docs: []protocol.JoinDoc{{Doc: "secret"}}})
	c.waitFor(func() bool {
		for _, f := range c.frames {
			if e, ok := f.(*protocol.Error); ok && e.Doc == "secret" && e.Code == protocol.CodeForbidden {
				return true
			}
		}
		return false
	}, "forbidden join")

	// A token minted in-process works too.
	iss, err := auth.NewHS256Issuer([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	tok2, err := iss.Issue(auth.Claims{Subject: "u2", ExpiresAt: time.Now().Add(time.Hour), Docs: map[string]auth.Perm{"*": auth.Read}})
	if err != nil {
		t.Fatal(err)
	}
	c2 := mustHello(t, p.ws+"?token="+tok2, nil)
	c2.join("notes/a")
	if got := c2.text("notes/a"); got != "hi" {
		t.Errorf("reader sees %q, want %q", got, "hi")
	}
	p.stop()
}

func TestToken(t *testing.T) {
	stdout, stderr, code := runWeft(t, "token", "--secret", testSecret, "--sub", "u9", "--docs", "a/*=r", "--docs", "b=rw")
	if code != 0 {
		t.Fatalf("weft token: exit %d: %s", code, stderr)
	}
	v, err := auth.NewVerifier(auth.Config{HS256Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(strings.TrimSpace(stdout), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "u9" || c.Can("a/x") != auth.Read || c.Can("b") != auth.Write || c.Can("c") != auth.None {
		t.Errorf("claims %+v", c)
	}
	if c.ExpiresIn(time.Now()) > 24*time.Hour || c.ExpiresIn(time.Now()) < 23*time.Hour {
		t.Errorf("expires in %v, want the 24h default", c.ExpiresIn(time.Now()))
	}

	// EdDSA: a key pair from -genkey, the public half given to serve.
	dir := t.TempDir()
	prefix := filepath.Join(dir, "dev")
	if _, stderr, code := runWeft(t, "token", "--genkey", prefix); code != 0 {
		t.Fatalf("-genkey: exit %d: %s", code, stderr)
	}
	if fi, err := os.Stat(prefix + ".key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v %v", fi, err)
	}
	stdout, stderr, code = runWeft(t, "token", "--key", prefix+".key", "--sub", "ed")
	if code != 0 {
		t.Fatalf("weft token -key: exit %d: %s", code, stderr)
	}
	p := startServe(t, []string{"WEFT_JWT_PUBKEY=" + prefix + ".pub"}, "--addr", "127.0.0.1:0", "--data", t.TempDir())
	mustHello(t, p.ws+"?token="+strings.TrimSpace(stdout), nil).join("any")
	p.stop()

	if _, stderr, code := runWeft(t, "token"); code != 2 || !strings.Contains(stderr, "WEFT_JWT_SECRET") {
		t.Errorf("token without a key: exit %d, %q", code, stderr)
	}
}

func TestServe_GracefulShutdown(t *testing.T) {
	dir := t.TempDir()
	p := startServe(t, nil, "--addr", "127.0.0.1:0", "--data", dir)
	c := mustHello(t, p.ws, nil)
	c.join("doc")
	const text = "survives a graceful restart"
	seq, err := c.appendText("doc", text)
	if err != nil {
		t.Fatal(err)
	}
	c.waitFor(func() bool { _, ok := c.acked[seq]; return ok }, "ack")

	p.signal(syscall.SIGTERM)
	var away *protocol.GoingAway
	c.waitFor(func() bool {
		for _, f := range c.frames {
			if g, ok := f.(*protocol.GoingAway); ok {
				away = g
			}
		}
		return away != nil && c.closed != nil
	}, "GoingAway and close")
	if away.RetryAfterMs == 0 {
		t.Error("GoingAway carries no retry-after")
	}
	var ce *gws.CloseError
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if !errors.As(closed, &ce) || ce.Code != 1001 {
		t.Errorf("close: %v, want code 1001", closed)
	}
	if code := p.wait(); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}

	p2 := startServe(t, nil, "--addr", "127.0.0.1:0", "--data", dir)
	if got := readText(t, p2.ws, "doc"); got != text {
		t.Errorf("after restart: %q, want %q", got, text)
	}
	if code, _, body := get(t, nil, p2.url+"/v1/docs/doc"); code != 200 || !strings.Contains(body, `"text":"`+text+`"`) {
		t.Errorf("GET /v1/docs/doc after restart: %d %q", code, body)
	}
	p2.stop()
}

// TestServe_ShutdownEndsStreams checks that open Server-Sent Events
// streams do not hold a graceful shutdown until its deadline: the
// deadline here is far beyond the test's wait limit.
func TestServe_ShutdownEndsStreams(t *testing.T) {
	requireAPI(t)
	p := startServe(t, nil, "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--shutdown-timeout", "10m")
	resp, err := http.Post(p.url+"/v1/docs/watched/edits", "application/json", strings.NewReader(`{"edits":[{"pos":0,"insert":"x"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("creating the document: %d", resp.StatusCode)
	}
	var bodies []io.ReadCloser
	for _, path := range []string{"/v1/docs/watched/events", "/v1/dashboard/events"} {
		resp, err := http.Get(p.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		bodies = append(bodies, resp.Body)
	}
	// The document stream opens with its snapshot.
	br := bufio.NewReader(bodies[0])
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the event stream: %v", err)
		}
		if strings.HasPrefix(line, "event: snapshot") {
			break
		}
	}
	p.stop()
	if strings.Contains(p.log(), "did not finish in time") || strings.Contains(p.log(), "did not leave in time") {
		t.Errorf("shutdown waited for its deadline:\n%s", p.log())
	}
	for _, b := range bodies {
		if _, err := io.Copy(io.Discard, b); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Logf("stream ended with %v", err)
		}
	}
}

func TestServe_DrainThenSecondSignal(t *testing.T) {
	p := startServe(t, nil, "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--drain-delay", "1m")
	p.signal(syscall.SIGTERM)
	p.waitLog("readyz fails while still serving")
	if code, _, body := get(t, nil, p.url+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining: %d %q, want 503", code, body)
	}
	if code, _, _ := get(t, nil, p.url+"/healthz"); code != 200 {
		t.Errorf("/healthz while draining: %d, want 200", code)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 1 {
		t.Errorf("exit status %d after a second signal, want 1", code)
	}
}

// TestServe_CrashKeepsAckedEdits kills the server with SIGKILL while a
// client streams edits, restarts it, and checks that every edit the
// server acknowledged survived.
func TestServe_CrashKeepsAckedEdits(t *testing.T) {
	dir := t.TempDir()
	args := []string{"--addr", "127.0.0.1:0", "--data", dir, "--ops-per-sec", "0", "--bytes-per-sec", "0"}
	p := startServe(t, nil, args...)
	c := mustHello(t, p.ws, nil)
	c.join("log")

	const maxEdits = 5000 // bound; the kill comes long before
	marker := func(i uint64) string { return fmt.Sprintf("<%d>", i) }
	var wg sync.WaitGroup
	wg.Go(func() {
		for range maxEdits {
			c.mu.Lock()
			next := c.seq + 1
			c.mu.Unlock()
			if _, err := c.appendText("log", marker(next)); err != nil {
				return // the server is gone
			}
		}
	})
	c.waitFor(func() bool { return len(c.acked) >= 100 }, "100 acks")
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	p.wait()
	c.waitFor(func() bool { return c.closed != nil }, "the connection to drop")
	wg.Wait()
	c.mu.Lock()
	acked := make([]uint64, 0, len(c.acked))
	for s := range c.acked {
		acked = append(acked, s)
	}
	sent := c.seq
	all := c.docs["log"].String()
	c.mu.Unlock()
	t.Logf("sent %d edits, %d acknowledged before the kill", sent, len(acked))

	p2 := startServe(t, nil, args...)
	got := readText(t, p2.ws, "log")
	for _, s := range acked {
		if !strings.Contains(got, marker(s)) {
			t.Errorf("acknowledged edit %d lost", s)
		}
	}
	// One writer appending in order: what survived is a prefix of what
	// was sent.
	if !strings.HasPrefix(all, got) {
		t.Errorf("recovered text is not a prefix of the sent text:\n got %.200q\nsent %.200q", got, all)
	}
	p2.stop()
}

// TestServe_CrashKeepsAckedHTTPEdits is the same for edits a backend
// posts over HTTP: a 200 with a version is the acknowledgement.
func TestServe_CrashKeepsAckedHTTPEdits(t *testing.T) {
	requireAPI(t)
	dir := t.TempDir()
	args := []string{"--addr", "127.0.0.1:0", "--data", dir}
	p := startServe(t, nil, args...)
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()

	const maxEdits = 5000
	marker := func(i int) string { return fmt.Sprintf("<%d>", i) }
	var (
		mu    sync.Mutex
		acked []int
		sent  strings.Builder
	)
	enough := make(chan struct{}) // closed at the 50th acknowledgement
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range maxEdits {
			m := marker(i)
			body := fmt.Sprintf(`{"edits":[{"pos":%d,"insert":%q}]}`, sent.Len(), m)
			sent.WriteString(m) // sent before the answer: it may be applied
			resp, err := client.Post(p.url+"/v1/docs/backend/edits", "application/json", strings.NewReader(body))
			if err != nil {
				return // the server is gone
			}
			var out struct{ Version *uint64 }
			err = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || err != nil || out.Version == nil {
				return
			}
			mu.Lock()
			if acked = append(acked, i); len(acked) == 50 {
				close(enough)
			}
			mu.Unlock()
		}
	})
	select {
	case <-enough:
	case <-p.done:
		t.Fatal("weft serve exited")
	case <-time.After(waitLimit):
		t.Fatalf("50 edits not acknowledged in %v", waitLimit)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	p.wait()
	wg.Wait()
	t.Logf("%d edits acknowledged before the kill", len(acked))

	p2 := startServe(t, nil, args...)
	code, _, body := get(t, client, p2.url+"/v1/docs/backend")
	var doc struct{ Text string }
	if err := json.Unmarshal([]byte(body), &doc); code != 200 || err != nil {
		t.Fatalf("GET after restart: %d %q %v", code, body, err)
	}
	for _, i := range acked {
		if !strings.Contains(doc.Text, marker(i)) {
			t.Errorf("acknowledged edit %d lost", i)
		}
	}
	if !strings.HasPrefix(sent.String(), doc.Text) {
		t.Errorf("recovered text is not a prefix of the sent text:\n got %.200q\nsent %.200q", doc.Text, sent.String())
	}
	p2.stop()
}

func TestServe_TLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	p := startServe(t, nil, "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "data"),
		"--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(p.url, "https://") || !strings.HasPrefix(p.ws, "wss://") {
		t.Fatalf("URLs %s %s, want https and wss", p.url, p.ws)
	}
	tlsConf := &tls.Config{RootCAs: pool}
	client := &http.Client{Timeout: waitLimit, Transport: &http.Transport{TLSClientConfig: tlsConf}}
	defer client.CloseIdleConnections()
	if code, _, body := get(t, client, p.url+"/healthz"); code != 200 {
		t.Errorf("/healthz over https: %d %q", code, body)
	}
	// Plain http to the TLS port gets no answer it could mistake for one.
	if resp, err := http.Get(strings.Replace(p.url, "https://", "http://", 1) + "/healthz"); err == nil {
		if resp.StatusCode == 200 {
			t.Error("plain http answered 200 on the TLS port")
		}
		resp.Body.Close()
	}
	c := mustHello(t, p.ws, tlsConf.Clone())
	c.join("secure")
	p.stop()
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// the files and a pool trusting the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "weft test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	var cb, kb bytes.Buffer
	_ = pem.Encode(&cb, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	_ = pem.Encode(&kb, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(certFile, cb.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, kb.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
