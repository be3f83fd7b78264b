package crdt_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// forbidden are imports that would give the CRDT I/O, clocks, goroutine
// coordination or randomness: it must stay a pure, deterministic state
// machine that the server drives.
var forbidden = []string{"sync", "time", "os", "net", "io/fs", "syscall", "math/rand"}

// goTool finds the go command that is running the tests.
func goTool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	t.Fatal("cannot find the go command on PATH or in $GOROOT/bin")
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestPurity requires crdt to depend on the standard library only, and to
// import none of the forbidden packages directly.
func TestPurity(t *testing.T) {
	gobin := goTool(t)
	run := func(args ...string) []string {
		t.Helper()
		cmd := exec.Command(gobin, args...)
		cmd.Dir = "."
		out, err := cmd.Output()
		if err != nil {
			var stderr string
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		return strings.Fields(string(out))
	}
	modPath := run("list", "-m")[0]
	deps := run("list", "-deps", "-f", "{{.ImportPath}}:{{.Standard}}", ".")
	if len(deps) < 2 {
		t.Fatalf("go list -deps printed %v", deps)
	}
	for _, line := range deps {
		path, std, _ := strings.Cut(line, ":")
		if path == modPath+"/crdt" {
			continue
		}
		first, _, _ := strings.Cut(path, "/")
		if strings.Contains(first, ".") || path == modPath || strings.HasPrefix(path, modPath+"/") || std != "true" {
			t.Errorf("crdt depends on %s, which is not in the standard library", path)
		}
	}
	imports := run("list", "-f", `{{join .Imports " "}}`, ".")
	if len(imports) == 0 {
		t.Fatal("go list printed no imports for crdt")
	}
	for _, imp := range imports {
		for _, bad := range forbidden {
			if imp == bad || strings.HasPrefix(imp, bad+"/") {
				t.Errorf("crdt imports %s; it must stay free of %v", imp, forbidden)
			}
		}
	}
}
