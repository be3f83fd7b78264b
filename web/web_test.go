package web_test

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/weft-sync/weft/web"
)

// The embedded bundle has the pages the server publishes.
func TestDist_HasPages(t *testing.T) {
	for _, name := range []string{"index.html", "dashboard.html", "main.js"} {
		if _, err := fs.Stat(web.Dist, name); err != nil {
			t.Errorf("web/dist lacks %s: %v (run npm run build in web/)", name, err)
		}
	}
}

// TestNpm runs the TypeScript suites (unit, golden vectors, Go/TS
// cross-checks, and Playwright end to end in headless Chromium against a
// real weft serve) so that `go test ./...` is the one command that runs
// every test. It also checks that the committed bundle matches the
// sources. A suite that skips for a missing requirement (Go, Chromium)
// fails here: skipped is not passed.
func TestNpm(t *testing.T) {
	if testing.Short() {
		t.Skip("the TypeScript suites take about a minute; run without -short")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatal("npm not found: install Node.js 20 or newer (the web client is TypeScript)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, npm, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("npm %v: %v\n%s", args, err, tail(out.Bytes(), 12000))
		}
		return out.String()
	}
	if stale("node_modules/.package-lock.json", "package-lock.json") {
		run("ci", "--no-audit", "--no-fund")
	}
	run("run", "check-dist")
	out := run("test")
	count := func(name string) int {
		m := regexp.MustCompile(`(?m)^# ` + name + ` (\d+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("npm test printed no %q count:\n%s", name, tail([]byte(out), 4000))
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	if pass, fail, skipped := count("pass"), count("fail"), count("skipped"); fail > 0 || skipped > 0 || pass == 0 {
		t.Fatalf("npm test: %d passed, %d failed, %d skipped\n%s", pass, fail, skipped, tail([]byte(out), 12000))
	} else {
		t.Logf("npm test: %d passed", pass)
	}
}

// stale reports whether installed is missing or older than want.
func stale(installed, want string) bool {
	a, err := os.Stat(installed)
	if err != nil {
		return true
	}
	b, err := os.Stat(want)
	return err != nil || a.ModTime().Before(b.ModTime())
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
