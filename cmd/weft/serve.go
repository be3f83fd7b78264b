package main

// weft serve: the sync server. This file only wires packages together —
// flags and environment, slog, the store, hub and server, the HTTP mux with
// explicit timeouts, and signals with a graceful shutdown. The behaviour
// worth testing lives in syncer and store; serve_test.go drives this file
// end to end as a real process.

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weft-sync/weft/auth"
	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/store"
	"github.com/weft-sync/weft/syncer"
	"github.com/weft-sync/weft/syncer/storelog"
	"github.com/weft-sync/weft/web"
)

// HTTP server timeouts. They are fixed rather than flags because they
// protect the process, not the application.
const (
	// readHeaderTimeout bounds a client that trickles request headers
	// (slowloris).
	readHeaderTimeout = 10 * time.Second
	// httpIdleTimeout closes kept-alive HTTP connections nobody uses.
	// Hijacked WebSocket connections are not affected: the syncer runs
	// its own ping and read deadline on those.
	httpIdleTimeout = 120 * time.Second
	// maxHeaderBytes leaves room for a bearer token in a header or in the
	// query string and little else.
	maxHeaderBytes = 64 << 10
	// ReadTimeout and WriteTimeout stay 0 on purpose. net/http applies
	// both to the whole request on the underlying connection: a
	// WriteTimeout would cut every Server-Sent Events stream after that
	// long, and the deadlines it sets survive a hijack, so it would kill
	// WebSockets too; a ReadTimeout would cut a long streamed POST of
	// edits. Long-lived handlers bound themselves instead: the WebSocket
	// transport renews read and write deadlines per connection (ping
	// interval plus pong wait) and closes slow consumers by byte budget,
	// and the HTTP API bounds its request bodies and heartbeats its
	// streams.
)

// envFlag ties a flag to the environment variable that sets it when the
// flag is not given on the command line.
type envFlag struct{ flag, env string }

// bindEnv defines nothing itself; it notes that flag name can also come
// from env and returns the usage suffix that says so.
func bindEnv(binds *[]envFlag, name, env string) string {
	*binds = append(*binds, envFlag{name, env})
	return " (env " + env + ")"
}

// applyEnv sets every flag that was not given on the command line from its
// environment variable, if that is set and not empty. Flags win over the
// environment; the environment wins over defaults.
func applyEnv(fs *flag.FlagSet, binds []envFlag, lookup func(string) (string, bool)) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, b := range binds {
		if given[b.flag] {
			continue
		}
		v, ok := lookup(b.env)
		if !ok || v == "" {
			continue
		}
		if err := fs.Set(b.flag, v); err != nil {
			return fmt.Errorf("%s=%q: %v", b.env, v, err)
		}
	}
	return nil
}

// byteSize is a flag.Value for sizes: a plain number of bytes, or a number
// with a unit: KiB, MiB, GiB (powers of 1024) or KB, MB, GB (powers of
// 1000).
type byteSize int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

func (s *byteSize) Set(v string) error {
	v = strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || (n > 0 && mult > (1<<62)/n) {
		return errors.New("want a size like 1048576, 512MiB or 2GB")
	}
	*s = byteSize(n * mult)
	return nil
}

func (s *byteSize) String() string {
	n := int64(*s)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// listFlag is a repeatable flag whose values may also be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for p := range strings.SplitSeq(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// serveConfig is everything `weft serve` can be told.
type serveConfig struct {
	addr, data             string
	jwtSecret              string
	jwtPubKeys             listFlag
	jwtIssuer, jwtAudience string
	tlsCert, tlsKey        string
	insecure               bool
	logFormat, logLevel    string

	idleTimeout      time.Duration
	memoryBudget     byteSize
	maxDocChars      int
	snapshotEvery    uint64
	opsPerSec        float64
	bytesPerSec      byteSize
	maxConnsPerIP    int
	sendBudget       byteSize
	maxDocsPerSocket int
	maxFrameBytes    byteSize

	noSync       bool
	storeMaxSize byteSize

	shutdownTimeout time.Duration
	drainDelay      time.Duration
}

func serveFlags(fs *flag.FlagSet) func(args []string, stdout, stderr io.Writer) int {
	c := &serveConfig{
		memoryBudget:  1 << 30,
		bytesPerSec:   2 << 20,
		sendBudget:    16 << 20,
		maxFrameBytes: protocol.MaxFrameBytes,
	}
	var binds []envFlag
	env := func(name, envName string) string { return bindEnv(&binds, name, envName) }

	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080",
		"listen `host:port`; port 0 picks a free one (the log says which)"+env("addr", "WEFT_ADDR"))
	fs.StringVar(&c.data, "data", "./weft-data",
		"data `dir`ectory, created 0700; the op log is DIR/weft.db"+env("data", "WEFT_DATA"))
	fs.StringVar(&c.jwtSecret, "jwt-secret", "",
		"HS256 `secret` (at least 32 bytes) that tokens must be signed with; prefer the env var, "+
			"flags show up in ps"+env("jwt-secret", "WEFT_JWT_SECRET"))
	fs.Var(&c.jwtPubKeys, "jwt-pubkey",
		"`path` to an Ed25519 public key PEM that EdDSA tokens may be signed for; repeat or "+
			"comma-separate for key rotation"+env("jwt-pubkey", "WEFT_JWT_PUBKEY"))
	fs.StringVar(&c.jwtIssuer, "jwt-issuer", "",
		"require this iss `claim` in tokens"+env("jwt-issuer", "WEFT_JWT_ISSUER"))
	fs.StringVar(&c.jwtAudience, "jwt-audience", "",
		"require this aud `claim` in tokens"+env("jwt-audience", "WEFT_JWT_AUDIENCE"))
	fs.StringVar(&c.tlsCert, "tls-cert", "",
		"serve https and wss with this certificate chain `PEM` (needs -tls-key)"+env("tls-cert", "WEFT_TLS_CERT"))
	fs.StringVar(&c.tlsKey, "tls-key", "",
		"private key `PEM` for -tls-cert"+env("tls-key", "WEFT_TLS_KEY"))
	fs.BoolVar(&c.insecure, "insecure", false,
		"allow a non-loopback address without auth: anyone who can reach it may read and "+
			"edit every document"+env("insecure", "WEFT_INSECURE"))
	fs.StringVar(&c.logFormat, "log-format", "text",
		"log `format` on stderr: text or json"+env("log-format", "WEFT_LOG_FORMAT"))
	fs.StringVar(&c.logLevel, "log-level", "info",
		"log `level`: debug, info, warn or error"+env("log-level", "WEFT_LOG_LEVEL"))

	fs.DurationVar(&c.idleTimeout, "idle-timeout", 60*time.Second,
		"unload a document this long after its last client left"+env("idle-timeout", "WEFT_IDLE_TIMEOUT"))
	fs.Var(&c.memoryBudget, "memory-budget",
		"estimated `size` of loaded documents above which idle ones are unloaded, least "+
			"recently used first"+env("memory-budget", "WEFT_MEMORY_BUDGET"))
	fs.IntVar(&c.maxDocChars, "max-doc-chars", 8<<20,
		"longest document, in code points; larger edits are refused"+env("max-doc-chars", "WEFT_MAX_DOC_CHARS"))
	fs.Uint64Var(&c.snapshotEvery, "snapshot-every", 500,
		"log records per document between snapshots (which truncate the log)"+env("snapshot-every", "WEFT_SNAPSHOT_EVERY"))
	fs.Float64Var(&c.opsPerSec, "ops-per-sec", 2000,
		"CRDT ops one connection may send per second, with a burst of twice that; 0 means "+
			"unlimited"+env("ops-per-sec", "WEFT_OPS_PER_SEC"))
	fs.Var(&c.bytesPerSec, "bytes-per-sec",
		"delta `size` one connection may send per second; 0 means unlimited"+env("bytes-per-sec", "WEFT_BYTES_PER_SEC"))
	fs.IntVar(&c.maxConnsPerIP, "max-conns-per-ip", 1024,
		"concurrent WebSocket connections from one address"+env("max-conns-per-ip", "WEFT_MAX_CONNS_PER_IP"))
	fs.Var(&c.sendBudget, "send-budget",
		"`size` queued to one connection before it is closed as a slow consumer"+env("send-budget", "WEFT_SEND_BUDGET"))
	fs.IntVar(&c.maxDocsPerSocket, "max-docs-per-socket", protocol.MaxDocsPerSocket,
		"documents one connection may join at once (at most the protocol's limit)"+env("max-docs-per-socket", "WEFT_MAX_DOCS_PER_SOCKET"))
	fs.Var(&c.maxFrameBytes, "max-frame-bytes",
		"largest inbound WebSocket frame `size` (at most the protocol's limit)"+env("max-frame-bytes", "WEFT_MAX_FRAME_BYTES"))

	fs.BoolVar(&c.noSync, "no-sync", false,
		"UNSAFE: skip fsync, so acknowledged edits can be lost and the file corrupted on a "+
			"machine crash; for benchmarks only"+env("no-sync", "WEFT_NO_SYNC"))
	fs.Var(&c.storeMaxSize, "store-max-size",
		"cap on the data file `size`; appends beyond it fail as disk full (0: no cap)"+env("store-max-size", "WEFT_STORE_MAX_SIZE"))

	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second,
		"how long a graceful shutdown waits for clients to leave before cutting them"+env("shutdown-timeout", "WEFT_SHUTDOWN_TIMEOUT"))
	fs.DurationVar(&c.drainDelay, "drain-delay", 0,
		"on SIGTERM, keep serving this long with /readyz failing, so a load balancer stops "+
			"routing here first (default 0: stop at once)"+env("drain-delay", "WEFT_DRAIN_DELAY"))

	return func(args []string, _, stderr io.Writer) int {
		if err := applyEnv(fs, binds, os.LookupEnv); err != nil {
			fmt.Fprintf(stderr, "weft serve: %v\n", err)
			return 2
		}
		if len(args) > 0 {
			fmt.Fprintf(stderr, "weft serve: unexpected arguments %q\n", args)
			return 2
		}
		return serve(c, stderr)
	}
}

// usageError is a configuration mistake: exit status 2.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func newLogger(c *serveConfig, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, usagef("-log-level %q: want debug, info, warn or error", c.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("-log-format %q: want text or json", c.logFormat)
}

// verifier builds the token verifier from the configuration, or returns
// nil when no auth is configured.
func (c *serveConfig) verifier() (*auth.Verifier, error) {
	if c.jwtSecret == "" && len(c.jwtPubKeys) == 0 {
		if c.jwtIssuer != "" || c.jwtAudience != "" {
			return nil, usagef("-jwt-issuer and -jwt-audience need -jwt-secret or -jwt-pubkey")
		}
		return nil, nil
	}
	cfg := auth.Config{Issuer: c.jwtIssuer, Audience: c.jwtAudience}
	if c.jwtSecret != "" {
		if len(c.jwtSecret) < auth.MinSecretLen {
			return nil, usagef("the JWT secret is %d bytes, want at least %d", len(c.jwtSecret), auth.MinSecretLen)
		}
		cfg.HS256Secret = []byte(c.jwtSecret)
	}
	for _, p := range c.jwtPubKeys {
		keys, err := readEd25519PublicKeys(p)
		if err != nil {
			return nil, err
		}
		cfg.EdDSAPublicKeys = append(cfg.EdDSAPublicKeys, keys...)
	}
	return auth.NewVerifier(cfg)
}

// readEd25519PublicKeys reads every "PUBLIC KEY" block (PKIX, as openssl
// pkey -pubout writes them) in a PEM file.
func readEd25519PublicKeys(file string) ([]ed25519.PublicKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var keys []ed25519.PublicKey
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "PUBLIC KEY" {
			continue
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%s: a %T, want an Ed25519 public key", file, k)
		}
		keys = append(keys, ek)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no PEM \"PUBLIC KEY\" block", file)
	}
	return keys, nil
}

// loopbackOnly reports whether every address addr can listen on is a
// loopback one: 127.0.0.0/8, ::1, or a name such as localhost that
// resolves only to those. An empty host (all interfaces) is not.
func loopbackOnly(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, err
	}
	if host == "" {
		return false, nil
	}
	if ip := parseIPLiteral(host); ip != nil {
		return ip.IsLoopback(), nil
	}
	ips, err := net.DefaultResolver.LookupIPAddr(context.Background(), host)
	if err != nil {
		return false, err
	}
	for _, ip := range ips {
		if !ip.IP.IsLoopback() {
			return false, nil
		}
	}
	return len(ips) > 0, nil
}

// parseIPLiteral parses an IP literal, with an optional IPv6 zone, or
// returns nil for a host name.
func parseIPLiteral(s string) net.IP {
	s, _, _ = strings.Cut(s, "%")
	return net.ParseIP(s)
}

// serve runs the server until SIGINT or SIGTERM and returns the exit
// status: 0 after a clean shutdown, 1 on failure, 2 on a configuration
// error. A second signal during shutdown exits 1 at once.
func serve(c *serveConfig, stderr io.Writer) int {
	log, err := newLogger(c, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "weft serve: %v\n", err)
		return 2
	}
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)

	err = run1(c, log, sigc)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		log.Error("refusing to start", "err", ue.error)
		fmt.Fprintf(stderr, "weft serve: %v\n", ue.error)
		return 2
	default:
		log.Error("weft serve failed", "err", err)
		return 1
	}
}

// run1 is serve after logging is set up.
func run1(c *serveConfig, log *slog.Logger, sigc <-chan os.Signal) error {
	v, err := c.verifier()
	if err != nil {
		return err
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return usagef("-tls-cert and -tls-key go together")
	}
	if c.maxDocsPerSocket > protocol.MaxDocsPerSocket || c.maxDocsPerSocket < 1 {
		return usagef("-max-docs-per-socket %d: want 1..%d", c.maxDocsPerSocket, protocol.MaxDocsPerSocket)
	}
	if c.maxFrameBytes > protocol.MaxFrameBytes || c.maxFrameBytes < 1024 {
		return usagef("-max-frame-bytes %d: want 1024..%d", c.maxFrameBytes, protocol.MaxFrameBytes)
	}
	if c.maxDocChars < 1 || c.maxConnsPerIP < 1 || c.opsPerSec < 0 || c.idleTimeout <= 0 ||
		c.memoryBudget <= 0 || c.sendBudget <= 0 || c.snapshotEvery == 0 || c.shutdownTimeout <= 0 || c.drainDelay < 0 {
		return usagef("-max-doc-chars, -max-conns-per-ip, -snapshot-every, -idle-timeout, -memory-budget, " +
			"-send-budget and -shutdown-timeout must be positive, -ops-per-sec and -drain-delay not negative")
	}

	var serving bool // set once hs.Serve owns the listener
	// Auth or loopback: decided before anything is bound or opened.
	loop, err := loopbackOnly(c.addr)
	if err != nil {
		return usagef("-addr %q: %v", c.addr, err)
	}
	if v == nil && !loop {
		if !c.insecure {
			return usagef("refusing to listen on %s without auth: anyone who can reach it could read and edit "+
				"every document. Set WEFT_JWT_SECRET or -jwt-pubkey, bind to 127.0.0.1, or pass -insecure", c.addr)
		}
		log.Warn("INSECURE: no auth configured on a non-loopback address; anyone who can reach it may read and edit every document", "addr", c.addr)
	}

	var tlsConf *tls.Config
	if c.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return fmt.Errorf("loading TLS certificate: %w", err)
		}
		// HTTP/2 stays on for the API. WebSockets still use HTTP/1.1:
		// net/http does not offer RFC 8441 extended CONNECT unless
		// GODEBUG=http2xconnect=1, so browsers never try WebSocket over
		// h2, which could not be hijacked.
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}

	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// The check above looked at the configured name; this looks at what
	// was bound, in case a name resolved differently the second time.
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && v == nil && !c.insecure && !ta.IP.IsLoopback() {
		_ = ln.Close()
		return usagef("refusing to serve on non-loopback %s without auth", ln.Addr())
	}

	// Everything from here to Serve closes ln on failure; after Serve,
	// the HTTP server owns it.
	defer func() {
		if !serving {
			_ = ln.Close()
		}
	}()

	if err := os.MkdirAll(c.data, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if c.noSync {
		log.Warn("!!! -no-sync: fsync is OFF. Acknowledged edits can be LOST and the data file CORRUPTED if the " +
			"machine crashes. Use this only for benchmarks. !!!")
	}
	dbPath := filepath.Join(c.data, "weft.db")
	db, err := store.Open(dbPath, store.Options{
		NoSync:  c.noSync,
		MaxSize: int64(c.storeMaxSize),
		Logger:  log.With("component", "store"),
	})
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("%s is in use by another process (is another weft serving -data %s?): %w", dbPath, c.data, err)
	}
	if err != nil {
		return err
	}
	var dbOpen atomic.Bool
	dbOpen.Store(true)
	closeDB := sync.OnceValue(func() error { dbOpen.Store(false); return db.Close() })
	defer closeDB()

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		storeCollector{db: db},
	)
	met := syncer.NewMetrics(reg)

	hub := syncer.NewHub(storelog.Log{DB: db}, syncer.Options{
		Engine: syncer.EngineOptions{
			MaxDocChars:   c.maxDocChars,
			SnapshotEvery: c.snapshotEvery,
		},
		IdleTimeout:  c.idleTimeout,
		MemoryBudget: int64(c.memoryBudget),
		Logger:       log.With("component", "hub"),
		Metrics:      met,
	})
	ops := c.opsPerSec
	if ops == 0 {
		ops = -1 // syncer: negative is unlimited, zero the default
	}
	bps := float64(c.bytesPerSec)
	if bps == 0 {
		bps = -1
	}
	sopts := syncer.ServerOptions{
		Limits: syncer.Limits{
			MaxFrameBytes:    int(c.maxFrameBytes),
			MaxDocsPerSocket: c.maxDocsPerSocket,
			OpsPerSecond:     ops,
			BytesPerSecond:   bps,
			SendBudget:       int64(c.sendBudget),
		},
		MaxConnsPerIP: c.maxConnsPerIP,
		Logger:        log.With("component", "syncer"),
		Metrics:       met,
	}
	if v != nil { // a nil *auth.Verifier in the interface would not be nil
		sopts.Verifier = v
	}
	srv := syncer.NewServer(hub, sopts)

	var draining atomic.Bool
	mux := http.NewServeMux()
	// The API serves every path under /v1/, the WebSocket endpoint
	// (/v1/ws) included, with JSON errors of its own.
	mux.Handle("/v1/", srv.APIHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		plain(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case draining.Load() || srv.Draining():
			plain(w, http.StatusServiceUnavailable, "draining")
		case !dbOpen.Load():
			plain(w, http.StatusServiceUnavailable, "store closed")
		default:
			plain(w, http.StatusOK, "ready")
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		Registry: reg, // also counts its own scrape errors
	}))
	mux.Handle("/", newWebHandler(webAssets, log))

	// Request contexts derive from base. It is cancelled once the hub
	// has flushed, which ends streams (SSE) that would otherwise hold
	// http.Server.Shutdown until its deadline.
	base, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		TLSConfig:         tlsConf,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return base },
	}

	scheme, wsScheme := "http", "ws"
	if tlsConf != nil {
		scheme, wsScheme = "https", "wss"
	}
	host := ln.Addr().String()
	attrs := []any{
		"url", scheme + "://" + host + "/",
		"ws", wsScheme + "://" + host + "/v1/ws",
		"data", dbPath,
		"auth", v != nil,
		"tls", tlsConf != nil,
		"durable", !c.noSync,
		"version", syncer.Version,
	}
	serveErr := make(chan error, 1)
	serving = true
	go func() {
		var err error
		if tlsConf != nil {
			err = hs.ServeTLS(ln, "", "")
		} else {
			err = hs.Serve(ln)
		}
		serveErr <- err
	}()
	log.Info("listening", attrs...)

	var failed error
	select {
	case sig := <-sigc:
		log.Info("shutting down", "signal", sig.String(), "timeout", c.shutdownTimeout)
	case err := <-serveErr:
		failed = fmt.Errorf("serve: %w", err)
		log.Error("HTTP server stopped; shutting down", "err", err)
	}
	draining.Store(true)

	// From here on a second signal means "now": the store is crash safe,
	// every acknowledged edit is already on disk.
	abort := make(chan struct{})
	go func() {
		select {
		case sig := <-sigc:
			log.Error("second signal: exiting without a clean shutdown", "signal", sig.String())
			os.Exit(1)
		case <-abort:
		}
	}()
	defer close(abort)

	if c.drainDelay > 0 && failed == nil {
		log.Info("draining: /readyz fails while still serving", "delay", c.drainDelay)
		time.Sleep(c.drainDelay)
	}

	ctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	// Stop accepting and let plain HTTP requests finish. Shutdown does not
	// touch hijacked WebSockets; srv.Shutdown below handles those.
	httpDone := make(chan error, 1)
	go func() { httpDone <- hs.Shutdown(ctx) }()
	// Tell every WebSocket client to go away and come back after a
	// retry-after, wait for them, then close the hub, which waits until
	// every document has written what it holds.
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("clients did not leave in time; cut them", "err", err)
	}
	log.Info("documents flushed")
	cancelBase()
	if err := <-httpDone; err != nil {
		log.Warn("HTTP requests did not finish in time; closing them", "err", err)
		_ = hs.Close()
	}
	if err := closeDB(); err != nil {
		return fmt.Errorf("closing the store: %w", err)
	}
	if failed != nil {
		return failed
	}
	log.Info("stopped cleanly")
	return nil
}

func plain(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body+"\n")
}

// --- the demo editor ------------------------------------------------------

// webAssets is the built web client (web/dist). A nil FS makes / answer
// "web assets not built".
var webAssets fs.FS = web.Dist

// webHandler serves the demo editor: "/" (with any query, e.g. ?doc=NAME)
// is index.html, "/dashboard" is dashboard.html when the bundle has one,
// and other paths are files of the bundle. Everything is revalidated with
// an ETag, since file names carry no content hash we could rely on.
type webHandler struct {
	fsys  fs.FS
	etags map[string]string // file → quoted sha256 prefix
}

func newWebHandler(fsys fs.FS, log *slog.Logger) http.Handler {
	if fsys == nil {
		log.Warn("web assets not built into this binary; / serves a notice")
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				w.Header().Set("Allow", "GET, HEAD")
				plain(w, http.StatusMethodNotAllowed, "method not allowed")
				return
			}
			plain(w, http.StatusNotFound, "web assets not built")
		})
	}
	h := &webHandler{fsys: fsys, etags: map[string]string{}}
	_ = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		// Dot files (say, dist/.gitattributes) are repository plumbing,
		// not part of the site.
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() && p != "." {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil
		}
		sum := sha256.Sum256(b)
		h.etags[p] = `"` + hex.EncodeToString(sum[:12]) + `"`
		return nil
	})
	return h
}

func (h *webHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		plain(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	switch name {
	case "":
		name = "index.html"
	case "dashboard":
		name = "dashboard.html"
	case "index.html":
		// One canonical URL for the editor, so relative links agree.
		http.Redirect(w, r, "/", http.StatusMovedPermanently)
		return
	}
	etag, ok := h.etags[name]
	if !ok {
		plain(w, http.StatusNotFound, "not found")
		return
	}
	f, err := h.fsys.Open(name)
	if err != nil {
		plain(w, http.StatusNotFound, "not found")
		return
	}
	defer f.Close()
	rs, ok := f.(io.ReadSeeker)
	if !ok {
		plain(w, http.StatusInternalServerError, "asset not seekable")
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Tokens can travel in URLs (?token=); keep them out of Referer.
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.ServeContent(w, r, name, time.Time{}, rs)
}

// --- store metrics --------------------------------------------------------

// storeCollector exports store.DB.Stats at scrape time. Counts since Open
// are counters, levels are gauges. Stats opens no transaction, so a scrape
// never waits for the writer.
type storeCollector struct{ db *store.DB }

var storeDescs = struct {
	groups, appends, records, retries, diskFull, trims, commitSeconds, lastCommit,
	freePages, pendingPages, freeBytes, readTxs, openReadTxs, pageWrites, fileBytes, maxBytes *prometheus.Desc
}{
	groups:        storeDesc("groups_total", "Group commits (one fsync each) since start."),
	appends:       storeDesc("appends_total", "Append requests committed since start."),
	records:       storeDesc("records_total", "Op-log records committed since start."),
	retries:       storeDesc("group_retries_total", "Failed groups retried request by request."),
	diskFull:      storeDesc("disk_full_total", "Requests refused because the disk or -store-max-size was full."),
	trims:         storeDesc("trims_total", "Log truncation transactions committed since start."),
	commitSeconds: storeDesc("commit_seconds_total", "Time spent committing (fsync included) since start."),
	lastCommit:    storeDesc("last_commit_seconds", "Duration of the latest commit."),
	freePages:     storeDesc("free_pages", "Pages on the freelist, reusable now."),
	pendingPages:  storeDesc("pending_pages", "Freed pages still held by open readers."),
	freeBytes:     storeDesc("free_bytes", "Bytes in free pages."),
	readTxs:       storeDesc("read_transactions_total", "Read transactions started since start."),
	openReadTxs:   storeDesc("open_read_transactions", "Read transactions open now."),
	pageWrites:    storeDesc("page_writes_total", "Pages written since start."),
	fileBytes:     storeDesc("file_bytes", "Size of the data file (it never shrinks)."),
	maxBytes:      storeDesc("max_bytes", "The configured cap on the data file, 0 for none."),
}

func storeDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName("weft", "store", name), help, nil, nil)
}

func (storeCollector) Describe(ch chan<- *prometheus.Desc) {
	d := storeDescs
	for _, x := range []*prometheus.Desc{d.groups, d.appends, d.records, d.retries, d.diskFull, d.trims,
		d.commitSeconds, d.lastCommit, d.freePages, d.pendingPages, d.freeBytes, d.readTxs, d.openReadTxs,
		d.pageWrites, d.fileBytes, d.maxBytes} {
		ch <- x
	}
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.db.Stats()
	d := storeDescs
	counter := func(desc *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v)
	}
	gauge := func(desc *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v)
	}
	counter(d.groups, float64(s.Groups))
	counter(d.appends, float64(s.Appends))
	counter(d.records, float64(s.Records))
	counter(d.retries, float64(s.Retries))
	counter(d.diskFull, float64(s.DiskFull))
	counter(d.trims, float64(s.Trims))
	counter(d.commitSeconds, s.TotalCommit.Seconds())
	gauge(d.lastCommit, s.LastCommit.Seconds())
	gauge(d.freePages, float64(s.FreePages))
	gauge(d.pendingPages, float64(s.PendingPages))
	gauge(d.freeBytes, float64(s.FreeBytes))
	counter(d.readTxs, float64(s.ReadTxs))
	gauge(d.openReadTxs, float64(s.OpenReadTxs))
	counter(d.pageWrites, float64(s.PageWrites))
	gauge(d.fileBytes, float64(s.FileSize))
	gauge(d.maxBytes, float64(s.MaxSize))
}
