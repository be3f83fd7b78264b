package edittrace_test

import (
	"strings"
	"testing"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/internal/edittrace"
)

func TestReplay_Sequential(t *testing.T) {
	tr, err := edittrace.Parse([]byte(`{"startContent":"ab","endContent":"aXéb","txns":[
		{"patches":[[1,0,"Xy"]]},{"patches":[[3,0,"é"],[2,1,""]]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Concurrent || tr.Patches != 3 || !tr.HasEnd {
		t.Fatalf("parsed %+v", tr)
	}
	d, err := tr.Replay()
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != tr.End {
		t.Fatalf("got %q, want %q", d.String(), tr.End)
	}
}

// Two agents type concurrently after a common parent; the replay brings each
// txn's replica to exactly its parents' state, so positions mean what the
// trace meant.
func TestReplay_Concurrent(t *testing.T) {
	tr, err := edittrace.Parse([]byte(`{"kind":"concurrent","numAgents":2,"endContent":"hello world!",
		"txns":[
		{"parents":[],"agent":0,"patches":[[0,0,"hello"]]},
		{"parents":[0],"agent":1,"patches":[[5,0," world"]]},
		{"parents":[0],"agent":0,"patches":[[0,1,"h"]]},
		{"parents":[1,2],"agent":0,"patches":[[11,0,"!"]]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	d, err := tr.ReplayChecked(func(int, ...*crdt.Text) error { checked++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != tr.End || checked != len(tr.Txns) {
		t.Fatalf("got %q after %d checks", d.String(), checked)
	}
}

func TestParse_Rejects(t *testing.T) {
	for _, bad := range []string{
		`{"txns":[{"patches":[[0,0]]}]}`,
		`{"kind":"weird","txns":[]}`,
		`{"txns":[{"parents":[3],"agent":0,"patches":[]}]}`,
		`{"txns":[{"patches":[[-1,0,"x"]]}]}`,
		`not json`,
	} {
		if _, err := edittrace.Parse([]byte(bad)); err == nil {
			t.Errorf("%s: parsed", bad)
		} else if strings.TrimSpace(err.Error()) == "" {
			t.Errorf("%s: empty error", bad)
		}
	}
}
