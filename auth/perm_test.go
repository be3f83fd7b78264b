package auth

import (
	"math"
	"testing"
	"time"
)

func TestPermStringAllows(t *testing.T) {
	tests := []struct {
		p                 Perm
		str               string
		none, read, write bool
	}{
		{None, "none", true, false, false},
		{Read, "read", true, true, false},
		{Write, "write", true, true, true},
		{Perm(7), "Perm(7)", false, false, false},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.str {
			t.Errorf("Perm(%d).String() = %q, want %q", uint8(tt.p), got, tt.str)
		}
		if got := tt.p.Allows(None); got != tt.none {
			t.Errorf("%v.Allows(None) = %v", tt.p, got)
		}
		if got := tt.p.Allows(Read); got != tt.read {
			t.Errorf("%v.Allows(Read) = %v", tt.p, got)
		}
		if got := tt.p.Allows(Write); got != tt.write {
			t.Errorf("%v.Allows(Write) = %v", tt.p, got)
		}
	}
}

func TestCan(t *testing.T) {
	docs := map[string]Perm{
		"notes/*":         Write,
		"notes/archive/*": Read,  // longer prefix narrows
		"notes/todo":      Read,  // exact narrows a prefix
		"pub*":            Read,  // prefix without a separator
		"pub/draft":       Write, // exact widens a prefix
		"readme":          Read,
	}
	tests := []struct {
		name string
		docs map[string]Perm
		doc  string
		want Perm
	}{
		{"exact", docs, "readme", Read},
		{"exact is not a prefix", docs, "readme2", None},
		{"prefix", docs, "notes/a", Write},
		{"prefix matches empty remainder", docs, "notes/", Write},
		{"prefix excludes its parent", docs, "notes", None},
		{"longer prefix beats shorter (narrowing)", docs, "notes/archive/2025", Read},
		{"exact r beats prefix rw", docs, "notes/todo", Read},
		{"exact rw beats prefix r", docs, "pub/draft", Write},
		{"prefix without separator", docs, "public", Read},
		{"no match", docs, "secret", None},
		{"star matches everything", map[string]Perm{"*": Read}, "anything/at/all", Read},
		{"star matches empty id", map[string]Perm{"*": Read}, "", Read},
		{"longer prefix beats star (widening)", map[string]Perm{"*": Read, "team/*": Write}, "team/x", Write},
		{"star is the fallback", map[string]Perm{"*": Read, "team/*": Write}, "other", Read},
		{"longer prefix beats star (narrowing)", map[string]Perm{"*": Write, "ro/*": Read}, "ro/x", Read},
		{"nil docs", nil, "readme", None},
		{"unknown perm value grants nothing", map[string]Perm{"x": Perm(9)}, "x", None},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Claims{Docs: tt.docs}
			if got := c.Can(tt.doc); got != tt.want {
				t.Errorf("Can(%q) = %v, want %v", tt.doc, got, tt.want)
			}
		})
	}
	var nilClaims *Claims
	if got := nilClaims.Can("readme"); got != None {
		t.Errorf("nil Claims: Can = %v, want none", got)
	}
}

func TestAnonymous(t *testing.T) {
	c := Anonymous("dev")
	if c.Name != "dev" || c.Subject == "" {
		t.Errorf("Anonymous = %+v", c)
	}
	for _, doc := range []string{"", "a", "notes/x"} {
		if got := c.Can(doc); got != Write {
			t.Errorf("Anonymous.Can(%q) = %v, want write", doc, got)
		}
	}
	if got := c.ExpiresIn(t0.Add(100 * 365 * 24 * time.Hour)); got != math.MaxInt64 {
		t.Errorf("Anonymous.ExpiresIn = %v, want max", got)
	}
}
