package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// childEnv tells a re-executed test binary to act as a helper process:
// "append:<path>" for TestCrash, "lock:<path>" for the lock test.
const childEnv = "WEFT_STORE_TEST_CHILD"

const (
	crashWriters = 4
	crashRounds  = 3
	crashAcks    = 300   // acks to read before each SIGKILL
	childAppends = 20000 // per writer: bounds a child that is never killed
)

// crashRec is the content rule: the record at seq of doc. Anything read
// back must equal it exactly, which catches torn, misplaced or stale data.
func crashRec(doc string, seq uint64) []byte {
	b := fmt.Appendf(nil, "%s#%d#", doc, seq)
	b = append(b, bytes.Repeat([]byte{byte('a' + seq%26)}, int(seq%97))...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

func crashSnap(doc string, seq uint64) []byte {
	return fmt.Appendf(nil, "snapshot of %s through %d", doc, seq)
}

// TestCrashChild is not a test by itself: TestCrash and
// TestOpen_LockedOtherProcess run it in a child process.
func TestCrashChild(t *testing.T) {
	mode, path, ok := strings.Cut(os.Getenv(childEnv), ":")
	if !ok {
		t.Skip("helper process; runs only under TestCrash and TestOpen_LockedOtherProcess")
	}
	switch mode {
	case "lock":
		db, err := Open(path, Options{Timeout: 100 * time.Millisecond})
		switch {
		case err == nil:
			_ = db.Close()
			fmt.Println("result opened")
		case errors.Is(err, ErrLocked):
			fmt.Println("result locked")
		default:
			fmt.Println("result", err)
		}
	case "append":
		crashChild(t, path)
	default:
		t.Fatalf("unknown child mode %q", mode)
	}
}

// crashChild appends from several goroutines, one document each, and
// prints every acknowledged range ("ack doc first last") and snapshot
// ("snap doc seq") only after the call returned, i.e. after fsync.
func crashChild(t *testing.T, path string) {
	db, err := Open(path, Options{trimBatch: 16}) // small: kills land mid-truncation
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mu sync.Mutex
	emit := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", args...) // one write(2) per line
	}
	var wg sync.WaitGroup
	for w := range crashWriters {
		wg.Go(func() {
			doc := fmt.Sprintf("crash%d", w)
			next := uint64(1)
			if m, err := db.Stat(doc); err == nil {
				next = m.LastSeq + 1
			} else if !errors.Is(err, ErrUnknownDoc) {
				t.Error(err)
				return
			}
			for i := range childAppends {
				rs := make([][]byte, 1+i%3)
				for j := range rs {
					rs[j] = crashRec(doc, next+uint64(j))
				}
				first, last, err := db.Append(doc, rs...)
				if err != nil || first != next {
					t.Errorf("Append %s: %d..%d, %v; want first %d", doc, first, last, err, next)
					return
				}
				emit("ack %s %d %d", doc, first, last)
				next = last + 1
				if w == 0 && i%25 == 24 {
					seq := last - 5
					if err := db.SaveSnapshot(doc, seq, crashSnap(doc, seq)); err != nil {
						t.Error(err)
						return
					}
					emit("snap %s %d", doc, seq)
				}
			}
		})
	}
	wg.Wait()
}

// crashState is what the children acknowledged, per document.
type crashState struct {
	acked, snap uint64
}

// TestCrash runs a child process that appends and snapshots, SIGKILLs it
// after crashAcks acknowledgements, and checks that every acknowledged
// record survived intact. It repeats on the same file, so later rounds also
// recover from truncations the previous kill interrupted.
func TestCrash(t *testing.T) {
	path := tempPath(t)
	state := make(map[string]*crashState)
	for round := range crashRounds {
		acks := runCrashChild(t, path, state)
		t.Logf("round %d: killed after %d acks", round, acks)
		checkFile(t, path)
		verifyCrash(t, path, state)
	}
}

func runCrashChild(t *testing.T, path string, state map[string]*crashState) (acks int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute) // bound, not a sync point
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=append:"+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() { // lines printed before the kill are still in the pipe: read to EOF
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 4 && f[0] == "ack":
			last, err := strconv.ParseUint(f[3], 10, 64)
			if err != nil {
				t.Fatalf("bad line %q", sc.Text())
			}
			st := stateOf(state, f[1])
			st.acked = max(st.acked, last)
			acks++
		case len(f) == 3 && f[0] == "snap":
			seq, err := strconv.ParseUint(f[2], 10, 64)
			if err != nil {
				t.Fatalf("bad line %q", sc.Text())
			}
			st := stateOf(state, f[1])
			st.snap = max(st.snap, seq)
		}
		if acks >= crashAcks && !killed {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
			killed = true
		}
	}
	werr := cmd.Wait()
	if !killed {
		t.Fatalf("child ended after %d acks without being killed: %v\nstderr:\n%s", acks, werr, stderr.Bytes())
	}
	return acks
}

func stateOf(state map[string]*crashState, doc string) *crashState {
	st := state[doc]
	if st == nil {
		st = &crashState{}
		state[doc] = st
	}
	return st
}

func verifyCrash(t *testing.T, path string, state map[string]*crashState) {
	t.Helper()
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	for doc, st := range state {
		m, err := db.Stat(doc)
		if err != nil {
			t.Fatalf("%s: acked through %d, Stat: %v", doc, st.acked, err)
		}
		if m.LastSeq < st.acked || m.SnapSeq < st.snap {
			t.Fatalf("%s: acked through %d with snapshot %d, stored %+v", doc, st.acked, st.snap, m)
		}
		if m.SnapSeq > 0 {
			seq, data, err := db.LoadSnapshot(doc)
			if err != nil || seq != m.SnapSeq || !bytes.Equal(data, crashSnap(doc, seq)) {
				t.Fatalf("%s: snapshot %d %q %v", doc, seq, data, err)
			}
		}
		next := m.SnapSeq + 1
		err = db.Range(doc, next, func(seq uint64, rec []byte) error {
			if seq != next || !bytes.Equal(rec, crashRec(doc, seq)) {
				return fmt.Errorf("seq %d (want %d): %q", seq, next, rec)
			}
			next++
			return nil
		})
		if err != nil || next != m.LastSeq+1 {
			t.Fatalf("%s: Range stopped before %d of %d: %v", doc, next, m.LastSeq, err)
		}
	}
}

// TestOpen_LockedOtherProcess checks the file lock across processes: a
// child opening a file this process holds gets ErrLocked, not a hang.
func TestOpen_LockedOtherProcess(t *testing.T) {
	path := tempPath(t)
	db := mustOpenPath(t, path, Options{})
	mustAppend(t, db, "d", []byte("x"))

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=lock:"+path)
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("result locked\n")) {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
