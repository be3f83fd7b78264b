package client_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-sync/weft/client"
	"github.com/weft-sync/weft/syncer"
)

// The restart tests run a client in a child process (this test binary,
// re-executed with childEnv set), kill it with SIGKILL and start it again
// on the same state file.
const childEnv = "WEFT_CLIENT_CHILD"

// marker is the n-th edit of a child: fixed length in code points, with
// multi-byte characters, so it is found whole in the text.
func marker(n int) string { return fmt.Sprintf("<é中🙂%05d>", n) }

const markerLen = 10 // code points in a marker

// runChild is the child's main. Modes:
//
//	edit:   open $DOC and insert $COUNT markers at marker boundaries,
//	        printing "ok N" after each insert returned, then "done", then
//	        wait to be killed.
//	resume: open every stored document, wait until synced, print
//	        "synced", close and exit.
func runChild(mode string) int {
	url, path, doc := os.Getenv("WEFT_URL"), os.Getenv("WEFT_STATE"), os.Getenv("WEFT_DOC")
	o := fastOptions()
	o.StatePath = path
	c, err := client.Dial(context.Background(), url, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return 1
	}
	out := bufio.NewWriter(os.Stdout)
	switch mode {
	case "edit":
		count, _ := strconv.Atoi(os.Getenv("WEFT_COUNT"))
		d, err := c.Open(doc)
		if err != nil {
			fmt.Fprintln(os.Stderr, "open:", err)
			return 1
		}
		r := rand.New(rand.NewPCG(uint64(count), 7))
		for i := range count {
			// Only this child edits, so the text is a sequence of markers.
			k := d.Len() / markerLen
			if err := d.Insert(r.IntN(k+1)*markerLen, marker(i)); err != nil {
				fmt.Fprintln(os.Stderr, "insert:", err)
				return 1
			}
			fmt.Fprintf(out, "ok %d\n", i)
			_ = out.Flush()
		}
		fmt.Fprintln(out, "done")
		_ = out.Flush()
		select {} // wait for SIGKILL
	case "resume":
		ids, err := c.StoredDocs()
		if err != nil {
			fmt.Fprintln(os.Stderr, "stored:", err)
			return 1
		}
		for _, id := range ids {
			if _, err := c.Open(id); err != nil {
				fmt.Fprintln(os.Stderr, "open:", err)
				return 1
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := c.WaitSynced(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "wait:", err)
			return 1
		}
		for _, d := range c.Docs() {
			fmt.Fprintf(os.Stderr, "resumed %s: %d code points, status %+v\n", d.ID(), d.Len(), d.Status())
		}
		fmt.Fprintln(out, "synced")
		_ = out.Flush()
		if err := c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "close:", err)
			return 1
		}
		return 0
	}
	return 2
}

// child is a running child process.
type child struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string
	stderr *bytes.Buffer
	wg     sync.WaitGroup
}

func startChild(t *testing.T, mode string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{childEnv + "=" + mode}, env...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	ch := &child{t: t, cmd: cmd, lines: make(chan string, 1024), stderr: &bytes.Buffer{}}
	cmd.Stderr = ch.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch.wg.Add(1)
	go func() {
		defer ch.wg.Done()
		defer close(ch.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			ch.lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	t.Cleanup(func() { ch.kill() })
	return ch
}

// next returns the next line, or "" when the child is gone.
func (ch *child) next(within time.Duration) string {
	ch.t.Helper()
	select {
	case l := <-ch.lines:
		return l
	case <-time.After(within):
		ch.t.Fatalf("child said nothing for %s; stderr:\n%s", within, ch.stderr)
	}
	return ""
}

func (ch *child) kill() {
	if ch.cmd.ProcessState == nil {
		_ = ch.cmd.Process.Kill()
		ch.wg.Wait()
		_ = ch.cmd.Wait()
	}
}

func (ch *child) wait() error {
	ch.wg.Wait()
	return ch.cmd.Wait()
}

// checkMarkers requires every marker in sure exactly once in text and no
// marker more than once.
func checkMarkers(t *testing.T, text string, sure, total int) {
	t.Helper()
	// Only whole markers: the text splits into them.
	rs := []rune(text)
	if len(rs)%markerLen != 0 {
		t.Fatalf("text of %d code points is not whole markers", len(rs))
	}
	for i := 0; i < len(rs); i += markerLen {
		m := string(rs[i : i+markerLen])
		if !strings.HasPrefix(m, "<é中🙂") || !strings.HasSuffix(m, ">") {
			t.Fatalf("broken marker %q in %q", m, text)
		}
	}
	for i := range total {
		n := strings.Count(text, marker(i))
		switch {
		case n > 1:
			t.Fatalf("marker %d appears %d times", i, n)
		case i < sure && n != 1:
			t.Fatalf("marker %d, whose insert returned, appears %d times", i, n)
		}
	}
}

// TestRestartResendsOfflineEdits: a client with a state file edits while
// the server is down and is killed; restarted on the same file once the
// server is up, it sends its edits, and the server holds each exactly once.
func TestRestartResendsOfflineEdits(t *testing.T) {
	ts := newServer(t, syncer.ServerOptions{})
	env := []string{"WEFT_URL=" + ts.url(), "WEFT_STATE=" + t.TempDir() + "/state.db", "WEFT_DOC=offline", "WEFT_COUNT=30"}
	ch := startChild(t, "edit", env...)
	for i := range 30 {
		if l := ch.next(20 * time.Second); l != fmt.Sprintf("ok %d", i) {
			t.Fatalf("child said %q; stderr:\n%s", l, ch.stderr)
		}
	}
	if l := ch.next(10 * time.Second); l != "done" {
		t.Fatalf("child said %q", l)
	}
	ch.kill()
	ts.start()
	// Starting the server before resuming the child means nothing of the
	// killed child reached it.
	if got := serverText(t, ts.url(), "offline"); got != "" {
		t.Fatalf("server has %q before the restart", got)
	}
	ch = startChild(t, "resume", env...)
	if l := ch.next(30 * time.Second); l != "synced" {
		t.Fatalf("child said %q; stderr:\n%s", l, ch.stderr)
	}
	if err := ch.wait(); err != nil {
		t.Fatalf("resume: %v; stderr:\n%s", err, ch.stderr)
	}
	checkMarkers(t, serverText(t, ts.url(), "offline"), 30, 30)
}

// TestRestartMidStreamExactlyOnce: a connected client is killed while it
// edits (some edits acked, some in flight, some not sent); restarted on
// its state file it resends what the server may lack: every edit whose
// call returned ends up in the document exactly once, and nothing twice.
func TestRestartMidStreamExactlyOnce(t *testing.T) {
	ts := startServer(t, syncer.ServerOptions{})
	const total = 400
	env := []string{"WEFT_URL=" + ts.url(), "WEFT_STATE=" + t.TempDir() + "/state.db", "WEFT_DOC=stream", "WEFT_COUNT=" + strconv.Itoa(total)}
	ch := startChild(t, "edit", env...)
	stopAt := 60 + rand.IntN(100)
	returned := 0
	for returned < stopAt {
		l := ch.next(20 * time.Second)
		if l != fmt.Sprintf("ok %d", returned) {
			t.Fatalf("child said %q; stderr:\n%s", l, ch.stderr)
		}
		returned++
	}
	ch.kill()
	// Drain what the child printed before it died: those edits returned too.
	for l := range ch.lines {
		if l == fmt.Sprintf("ok %d", returned) {
			returned++
		}
	}
	before := serverText(t, ts.url(), "stream")
	checkMarkers(t, before, 0, total)
	ch = startChild(t, "resume", env...)
	if l := ch.next(30 * time.Second); l != "synced" {
		t.Fatalf("child said %q; stderr:\n%s", l, ch.stderr)
	}
	if err := ch.wait(); err != nil {
		t.Fatalf("resume: %v; stderr:\n%s", err, ch.stderr)
	}
	after := serverText(t, ts.url(), "stream")
	checkMarkers(t, after, returned, total)
	t.Logf("killed after %d returned edits; the server had %d markers before the restart, %d after",
		returned, len([]rune(before))/markerLen, len([]rune(after))/markerLen)
}
