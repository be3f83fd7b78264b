package client_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-sync/weft/client"
	"github.com/weft-sync/weft/syncer"
)

// TestReconnectStorm: 500 clients are connected when the server restarts.
// They all come back at once; the server's upgrade admission answers most
// with 429 and Retry-After, the clients wait as told (with jitter), and
// every one of them rejoins and resyncs within a bounded time, with no
// error other than those refusals.
func TestReconnectStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("500 clients")
	}
	const n, ndocs = 500, 10
	ts := startServer(t, syncer.ServerOptions{
		UpgradesPerSecond: 250, UpgradeBurst: 50, GoingAwayRetry: 200 * time.Millisecond,
	})
	o := client.Options{Backoff: client.Backoff{Base: 100 * time.Millisecond, Cap: 2 * time.Second}}
	clients := make([]*client.Client, n)
	docs := make([]*client.Doc, n)
	logs := make([]*errLog, n)
	for i := range n {
		clients[i] = mustDial(t, ts.url(), o)
		logs[i] = collectErrors(clients[i])
		docs[i] = mustOpen(t, clients[i], fmt.Sprintf("storm-%d", i%ndocs))
	}
	allSynced := func(phase string) time.Duration {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for _, d := range docs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := d.WaitSynced(ctx); err != nil {
					errs <- fmt.Errorf("%s: %w (status %+v)", d.ID(), err, d.Status())
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("%s: %v", phase, err)
		}
		return time.Since(start)
	}
	took := allSynced("first connect")
	for i, d := range docs {
		if err := d.Insert(0, fmt.Sprintf("[%d é中🙂]", i)); err != nil {
			t.Fatal(err)
		}
	}
	allSynced("edits")
	dials := make([]int64, n)
	retries := int64(0)
	for i, c := range clients {
		s := c.Stats()
		dials[i] = s.Dials
		retries += s.RetryAfters
	}
	t.Logf("first connect of %d clients: %s, %d retry-after refusals", n, took, retries)

	restart := time.Now()
	ts.stop()
	ts.start()
	// Synced again on a new connection (not still on the old one).
	waitFor(t, 60*time.Second, "every client to reconnect", func() bool {
		for _, c := range clients {
			if c.Stats().Reconnects == 0 {
				return false
			}
		}
		return true
	})
	allSynced("after restart")
	took = time.Since(restart)
	var redials, maxDials, refusals int64
	for i, c := range clients {
		s := c.Stats()
		d := s.Dials - dials[i]
		redials += d
		maxDials = max(maxDials, d)
		refusals += s.RetryAfters
		if s.Reconnects != 1 {
			t.Errorf("client %d reconnected %d times", i, s.Reconnects)
		}
	}
	refusals -= retries
	t.Logf("after the restart all %d rejoined in %s: %d dials (at most %d by one client), %d retry-after refusals",
		n, took, redials, maxDials, refusals)
	if refusals == 0 {
		t.Error("no client was refused: admission control was not exercised")
	}
	// Honouring Retry-After (at least 1 s) bounds how often one client
	// dials while refused: about once per second of the storm, plus the
	// dials that found the server down.
	if limit := int64(time.Since(restart)/time.Second) + 12; maxDials > limit {
		t.Errorf("a client dialled %d times in %s", maxDials, time.Since(restart))
	}
	// Every replica of a document holds every client's edit.
	for k := range ndocs {
		var group []*client.Doc
		for i := k; i < n; i += ndocs {
			group = append(group, docs[i])
		}
		text := converged(t, 10*time.Second, group...)
		for i := k; i < n; i += ndocs {
			if !strings.Contains(text, fmt.Sprintf("[%d é中🙂]", i)) {
				t.Fatalf("%s lacks the edit of client %d", docs[k].ID(), i)
			}
		}
	}
	for _, c := range clients {
		_ = c.Close()
	}
	bad := 0
	for i, l := range logs {
		l.wg.Wait()
		for _, err := range l.unexpected() {
			if bad++; bad <= 10 {
				t.Errorf("client %d: %v", i, err)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d errors that were not retry-after refusals", bad)
	}
}
