package protocol

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/golden, the FuzzDecode seed corpus and the examples in docs/protocol.md")

const docsPath = "../docs/protocol.md"

func goldenPath(k Kind) string { return filepath.Join("testdata", "golden", k.String()+".bin") }

// TestGolden pins the bytes of one frame per kind: the encoder must produce
// them, the decoder must read them back to the same value, and re-encoding
// that value must give the same bytes. A TypeScript client runs the same
// files.
func TestGolden(t *testing.T) {
	frames := goldenFrames()
	have := make(map[Kind]bool)
	for _, f := range frames {
		have[f.Kind()] = true
	}
	for _, k := range Kinds() {
		if !have[k] {
			t.Errorf("no golden frame for %s", k)
		}
	}
	for _, f := range frames {
		t.Run(f.Kind().String(), func(t *testing.T) {
			got := mustEncode(t, f)
			path := goldenPath(f.Kind())
			if *update {
				writeFile(t, path, got)
				seed := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", got)
				writeFile(t, filepath.Join("testdata", "fuzz", "FuzzDecode", "golden-"+f.Kind().String()), []byte(seed))
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGolden -update ./protocol)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoding changed:\n got % x\nwant % x", got, want)
			}
			dec := mustDecode(t, want)
			if !equalFrames(dec, f) {
				t.Fatalf("decoded %#v\nwant    %#v", dec, f)
			}
			if again := mustEncode(t, dec); !bytes.Equal(again, want) {
				t.Fatalf("re-encoding differs:\n got % x\nwant % x", again, want)
			}
		})
	}
}

var goldenBlock = regexp.MustCompile("(?s)<!-- golden:([a-z_]+) -->\n.*?<!-- /golden -->")

func docBlock(k Kind, b []byte) string {
	return "<!-- golden:" + k.String() + " -->\n```\n" + hexDump(b) + "\n```\n<!-- /golden -->"
}

// TestDocsGoldenHex keeps the hex examples of docs/protocol.md equal to the
// golden files, so the spec can never drift from the code.
func TestDocsGoldenHex(t *testing.T) {
	doc, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	blocks := make(map[string]string)
	for _, k := range Kinds() {
		b, err := os.ReadFile(goldenPath(k))
		if err != nil {
			t.Fatal(err)
		}
		blocks[k.String()] = docBlock(k, b)
	}
	if *update {
		out := goldenBlock.ReplaceAllStringFunc(string(doc), func(m string) string {
			name := goldenBlock.FindStringSubmatch(m)[1]
			if b, ok := blocks[name]; ok {
				return b
			}
			return m
		})
		writeFile(t, docsPath, []byte(out))
		doc = []byte(out)
	}
	for _, k := range Kinds() {
		if !strings.Contains(string(doc), blocks[k.String()]) {
			t.Errorf("%s lacks the current example of %s; run go test -run 'TestGolden|TestDocs' -update ./protocol\nwant:\n%s",
				docsPath, k, blocks[k.String()])
		}
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
