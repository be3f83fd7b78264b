package syncer_test

import (
	"testing"
	"time"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/syncer"
)

func (c *wsClient) session() protocol.SessionID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ofKind[*protocol.Welcome](c.frames)[0].Session
}

// peerOf returns the newest presence of session s that c received, and
// whether the newest news about s is that it is gone (c.mu held).
func (c *wsClient) peerOf(s protocol.SessionID) (peer *protocol.Peer, gone bool) {
	for _, u := range ofKind[*protocol.PresenceUpdate](c.frames) {
		for i := range u.Peers {
			if u.Peers[i].Session == s {
				peer, gone = &u.Peers[i], false
			}
		}
		for _, g := range u.Gone {
			if g == s {
				peer, gone = nil, true
			}
		}
	}
	return peer, gone
}

func (c *wsClient) setPresence(doc string, clock uint64, pos int) {
	c.t.Helper()
	c.mu.Lock()
	anc, err := c.docs[doc].AnchorAt(pos, crdt.AssocRight)
	c.mu.Unlock()
	if err != nil {
		c.t.Fatal(err)
	}
	c.send(&protocol.Presence{Doc: doc, Clock: clock, Cursor: anc, Selections: []protocol.Selection{{Anchor: anc, Head: anc}}})
}

// TestServer_PresenceFollowsEditsAndEnds: presence reaches the other
// clients, its anchor resolves to the same character after a concurrent
// insert before it, and it ends at once when its session disconnects.
func TestServer_PresenceFollowsEditsAndEnds(t *testing.T) {
	ts := startServer(t, t.TempDir(), syncer.Options{}, syncer.ServerOptions{})
	a, b, c := mustDial(t, ts.url), mustDial(t, ts.url), mustDial(t, ts.url)
	for _, x := range []*wsClient{a, b, c} {
		x.join("doc")
	}
	a.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "héllo 𝄞world") })
	a.waitAcked()
	for _, x := range []*wsClient{b, c} {
		x.waitFor(func() bool { return x.docs["doc"].Len() == 12 }, "the text")
	}

	sa := a.session()
	a.setPresence("doc", 1, 7) // the w
	var peer *protocol.Peer
	b.waitFor(func() bool { peer, _ = b.peerOf(sa); return peer != nil }, "a's presence at b")
	if peer.Agent != a.agent || peer.User.Name != "tester" || peer.Clock != 1 {
		t.Fatalf("a's presence: %+v", peer)
	}
	resolve := func() int {
		t.Helper()
		b.mu.Lock()
		defer b.mu.Unlock()
		pos, ok := b.docs["doc"].Resolve(peer.Cursor)
		if !ok {
			t.Fatal("a's cursor does not resolve at b")
		}
		return pos
	}
	if pos := resolve(); pos != 7 {
		t.Fatalf("a's cursor at %d in b's replica, want 7", pos)
	}
	// c inserts before the cursor; at b the same anchor now resolves
	// further right, on the same character.
	c.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "😀😀 ") })
	c.waitAcked()
	b.waitFor(func() bool { return b.docs["doc"].Len() == 15 }, "c's insert at b")
	if pos := resolve(); pos != 10 {
		t.Fatalf("after the insert a's cursor is at %d, want 10", pos)
	}
	if got := []rune(b.text("doc"))[10]; got != 'w' {
		t.Fatalf("a's cursor sits on %q", got)
	}
	// A joiner is told who is here.
	d := mustDial(t, ts.url)
	d.join("doc")
	d.waitFor(func() bool { p, _ := d.peerOf(sa); return p != nil }, "a's presence at a joiner")

	// The sender never gets its own presence back.
	a.mu.Lock()
	if p, _ := a.peerOf(sa); p != nil {
		a.mu.Unlock()
		t.Fatalf("a got its own presence: %+v", p)
	}
	a.mu.Unlock()

	// Disconnecting ends it at once (the TTL is 30 s).
	a.disconnect()
	for _, x := range []*wsClient{b, c, d} {
		x.waitFor(func() bool { _, gone := x.peerOf(sa); return gone }, "a's presence to be gone")
	}
}

// TestServer_PresenceExpires: presence not refreshed within PresenceTTL is
// removed, although its session stays connected.
func TestServer_PresenceExpires(t *testing.T) {
	ts := startServer(t, t.TempDir(), syncer.Options{Engine: syncer.EngineOptions{PresenceTTL: 100 * time.Millisecond}}, syncer.ServerOptions{})
	a, b := mustDial(t, ts.url), mustDial(t, ts.url)
	a.join("doc")
	b.join("doc")
	sa := a.session()
	a.setPresence("doc", 1, 0)
	b.waitFor(func() bool { p, _ := b.peerOf(sa); return p != nil }, "a's presence")
	b.waitFor(func() bool { _, gone := b.peerOf(sa); return gone }, "a's presence to expire")
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed != nil {
		t.Fatalf("a was disconnected: %v", a.closed)
	}
}
