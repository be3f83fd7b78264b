package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// weftBin is the command under test, built once by TestMain.
var weftBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "weft-cmd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	weftBin = filepath.Join(dir, "weft")
	gobin, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			gobin, err = filepath.Join(root, "bin", "go"), nil
		}
	}
	if err == nil {
		out, berr := exec.Command(gobin, "build", "-o", weftBin, ".").CombinedOutput()
		if berr != nil {
			err = fmt.Errorf("go build: %v\n%s", berr, out)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "building weft:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runWeft runs the built command and returns stdout, stderr and the exit
// status.
func runWeft(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(weftBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("running weft %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

// traceLine is the JSON line weft trace prints per file, every field
// required.
type traceLine struct {
	File          *string  `json:"file"`
	Kind          *string  `json:"kind"`
	Patches       *int     `json:"patches"`
	FinalLen      *int     `json:"final_len"`
	OK            *bool    `json:"ok"`
	ApplyMS       *float64 `json:"apply_ms"`
	MergeMS       *float64 `json:"merge_ms"`
	SnapshotBytes *int     `json:"snapshot_bytes"`
	LoadMS        *float64 `json:"load_ms"`
	HeapBytes     *int64   `json:"heap_bytes"`
}

func parseLines(t *testing.T, stdout string, want int) []traceLine {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if stdout == "" || len(lines) != want {
		t.Fatalf("want %d JSON lines on stdout, got %d:\n%s", want, len(lines), stdout)
	}
	var out []traceLine
	for _, l := range lines {
		var tl traceLine
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&tl); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if tl.File == nil || tl.Kind == nil || tl.Patches == nil || tl.FinalLen == nil || tl.OK == nil ||
			tl.ApplyMS == nil || tl.MergeMS == nil || tl.SnapshotBytes == nil || tl.LoadMS == nil || tl.HeapBytes == nil {
			t.Fatalf("line %q lacks a field", l)
		}
		out = append(out, tl)
	}
	return out
}

func tracesDir(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "..", "shared", "traces")
	for _, name := range []string{"automerge-paper.json.gz", "friendsforever.json.gz"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatalf("editing trace missing: %v (the traces live in ../shared/traces beside the repository)", err)
		}
	}
	return dir
}

func TestTraceSharedTraces(t *testing.T) {
	dir := tracesDir(t)
	stdout, stderr, code := runWeft(t, "trace", "-runs", "1",
		filepath.Join(dir, "automerge-paper.json.gz"), filepath.Join(dir, "friendsforever.json.gz"))
	t.Logf("stdout:\n%sstderr:\n%s", stdout, stderr)
	if code != 0 {
		t.Fatalf("exit status %d", code)
	}
	lines := parseLines(t, stdout, 2)
	for i, want := range []struct {
		file, kind        string
		patches, finalLen int
	}{
		{"automerge-paper.json.gz", "sequential", 259778, 104852},
		{"friendsforever.json.gz", "concurrent", 26078, 21362},
	} {
		l := lines[i]
		if *l.File != want.file || *l.Kind != want.kind || *l.Patches != want.patches || *l.FinalLen != want.finalLen || !*l.OK {
			t.Errorf("line %d: file %q kind %q patches %d final_len %d ok %v; want %+v ok true",
				i, *l.File, *l.Kind, *l.Patches, *l.FinalLen, *l.OK, want)
		}
		if *l.ApplyMS <= 0 || *l.MergeMS <= 0 || *l.LoadMS <= 0 || *l.SnapshotBytes <= 0 || *l.HeapBytes <= 0 {
			t.Errorf("line %d: measurements not all positive: %+v", i, l)
		}
	}
}

// writeTrace writes a trace as plain JSON, or gzipped when gz is set.
func writeTrace(t *testing.T, name string, v any, gz bool) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if gz {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		b = buf.Bytes()
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// seqTrace builds a small sequential trace over multi-byte and astral text;
// its end text, worked out by hand, is "hello wörld!".
func seqTrace(end string) map[string]any {
	return map[string]any{
		"startContent": "",
		"endContent":   end,
		"txns": []map[string]any{
			{"patches": []any{[]any{0, 0, "héllo"}}},
			{"patches": []any{[]any{5, 0, " wörld😀"}}}, // 12 code points
			{"patches": []any{[]any{1, 1, "e"}, []any{11, 1, ""}}},
			{"patches": []any{[]any{11, 0, "!"}}},
		},
	}
}

func TestTraceHandMade(t *testing.T) {
	conc := map[string]any{
		"kind":       "concurrent",
		"numAgents":  2,
		"endContent": "YabcX!",
		"txns": []map[string]any{
			{"agent": 0, "parents": []int{}, "patches": []any{[]any{0, 0, "abc"}}},
			{"agent": 1, "parents": []int{0}, "patches": []any{[]any{3, 0, "X"}}},    // abcX
			{"agent": 0, "parents": []int{0}, "patches": []any{[]any{0, 0, "Y"}}},    // Yabc, concurrent
			{"agent": 1, "parents": []int{1, 2}, "patches": []any{[]any{5, 0, "!"}}}, // YabcX!
		},
	}
	withStart := seqTrace("»hello wörld!")
	withStart["startContent"] = "»"
	for _, p := range withStart["txns"].([]map[string]any) {
		for _, x := range p["patches"].([]any) {
			x.([]any)[0] = x.([]any)[0].(int) + 1
		}
	}
	tests := []struct {
		name     string
		trace    map[string]any
		gz       bool
		kind     string
		patches  int
		finalLen int
		ok       bool
	}{
		{"sequential", seqTrace("hello wörld!"), false, "sequential", 5, 12, true},
		{"sequential gzipped", seqTrace("hello wörld!"), true, "sequential", 5, 12, true},
		{"start content", withStart, false, "sequential", 5, 13, true},
		{"concurrent", conc, false, "concurrent", 4, 6, true},
		{"mismatch", seqTrace("hello world!"), false, "sequential", 5, 12, false},
		{"mismatch gzipped", seqTrace("hello wörld"), true, "sequential", 5, 12, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeTrace(t, "trace.json", tc.trace, tc.gz)
			stdout, stderr, code := runWeft(t, "trace", "-runs", "3", p)
			l := parseLines(t, stdout, 1)[0]
			if *l.File != "trace.json" || *l.Kind != tc.kind || *l.Patches != tc.patches || *l.FinalLen != tc.finalLen || *l.OK != tc.ok {
				t.Fatalf("got file %q kind %q patches %d final_len %d ok %v; want %q %d %d %v\nstderr:\n%s",
					*l.File, *l.Kind, *l.Patches, *l.FinalLen, *l.OK, tc.kind, tc.patches, tc.finalLen, tc.ok, stderr)
			}
			if tc.ok && code != 0 {
				t.Fatalf("exit status %d for a matching trace; stderr:\n%s", code, stderr)
			}
			if !tc.ok {
				if code == 0 {
					t.Fatal("exit status 0 for a trace whose endContent does not match")
				}
				if !strings.Contains(stderr, "differs from endContent") {
					t.Fatalf("stderr does not explain the mismatch:\n%s", stderr)
				}
			}
		})
	}
}

// TestTraceBadInput: unreadable and malformed traces fail with ok false, and
// a good file beside them is still reported.
func TestTraceBadInput(t *testing.T) {
	good := writeTrace(t, "good.json", seqTrace("hello wörld!"), false)
	notJSON := filepath.Join(t.TempDir(), "junk.json")
	if err := os.WriteFile(notJSON, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	outOfRange := writeTrace(t, "range.json", map[string]any{
		"endContent": "a",
		"txns":       []map[string]any{{"patches": []any{[]any{1, 0, "a"}}}},
	}, false)
	badPatch := writeTrace(t, "patch.json", map[string]any{
		"endContent": "a",
		"txns":       []map[string]any{{"patches": []any{[]any{0, "a"}}}},
	}, false)
	missing := filepath.Join(t.TempDir(), "missing.json")
	stdout, stderr, code := runWeft(t, "trace", "-runs", "1", good, notJSON, outOfRange, badPatch, missing)
	if code != 1 {
		t.Fatalf("exit status %d, want 1; stderr:\n%s", code, stderr)
	}
	lines := parseLines(t, stdout, 5)
	for i, want := range []bool{true, false, false, false, false} {
		if *lines[i].OK != want {
			t.Errorf("line %d (%s): ok %v, want %v", i, *lines[i].File, *lines[i].OK, want)
		}
	}
	for _, name := range []string{"junk.json", "range.json", "patch.json", "missing.json"} {
		if !strings.Contains(stderr, name) {
			t.Errorf("stderr does not mention %s:\n%s", name, stderr)
		}
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{[]string{"help"}, 0, "trace", ""},
		{[]string{"-h"}, 0, "trace", ""},
		{[]string{"--help"}, 0, "commands:", ""},
		{[]string{"help", "trace"}, 0, "-runs", ""},
		{[]string{"trace", "-h"}, 0, "", "-runs"},
		{nil, 2, "", "commands:"},
		{[]string{"bogus"}, 2, "", "commands:"},
		{[]string{"help", "bogus"}, 2, "", "unknown subcommand"},
		{[]string{"trace"}, 2, "", "no trace files"},
		{[]string{"trace", "-runs", "0", "x"}, 2, "", "-runs"},
		{[]string{"trace", "-nosuchflag"}, 2, "", "-nosuchflag"},
	} {
		stdout, stderr, code := runWeft(t, tc.args...)
		if code != tc.code || !strings.Contains(stdout, tc.inStdout) || !strings.Contains(stderr, tc.inStderr) {
			t.Errorf("weft %v: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				tc.args, code, stdout, stderr, tc.code, tc.inStdout, tc.inStderr)
		}
	}
}
