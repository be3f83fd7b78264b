package auth

import (
	"fmt"
	"strings"
)

// Perm is what a client may do with one document. The values are ordered:
// a stronger permission includes every weaker one, so Write implies Read.
type Perm uint8

const (
	None  Perm = iota // may not open the document
	Read              // may open it and receive updates and presence
	Write             // Read, plus may send edits
)

// String returns "none", "read" or "write".
func (p Perm) String() string {
	switch p {
	case None:
		return "none"
	case Read:
		return "read"
	case Write:
		return "write"
	}
	return fmt.Sprintf("Perm(%d)", uint8(p))
}

// Allows reports whether p includes need, e.g. Write.Allows(Read).
// Unknown values allow nothing.
func (p Perm) Allows(need Perm) bool {
	return p <= Write && p >= need
}

// claimValue is p's spelling in the docs claim.
func (p Perm) claimValue() (string, error) {
	switch p {
	case Read:
		return "r", nil
	case Write:
		return "rw", nil
	}
	// None has no spelling on purpose: a pattern that grants nothing is
	// left out of the token rather than written as a deny rule.
	return "", fmt.Errorf("permission %v cannot appear in a token", p)
}

func parsePerm(s string) (Perm, error) {
	switch s {
	case "r":
		return Read, nil
	case "rw":
		return Write, nil
	}
	return None, fmt.Errorf("permission %q: want \"r\" or \"rw\"", s)
}

// checkPattern rejects patterns whose meaning would be a guess: the empty
// string, and a '*' anywhere but at the end (we have no globbing, and
// "a*b" silently matching only the literal id would surprise an issuer).
func checkPattern(pat string) error {
	if pat == "" {
		return fmt.Errorf("empty document pattern")
	}
	if i := strings.IndexByte(pat, '*'); i >= 0 && i != len(pat)-1 {
		return fmt.Errorf("document pattern %q: '*' is only allowed at the end", pat)
	}
	return nil
}

// Can returns c's permission on the document doc. Patterns in c.Docs are
// exact document ids, or prefixes ending in '*' ("*" alone matches every
// document). The most specific matching pattern decides:
//
//   - an exact id beats any prefix, and
//   - a longer prefix beats a shorter one.
//
// So {"notes/*": "rw", "notes/todo": "r"} makes notes/todo read-only while
// the rest of notes/ stays writable; an issuer can narrow a grant without
// enumerating its siblings. The most specific pattern is used even when a
// broader one grants more, which is what makes such carve-outs possible.
// A document no pattern matches gets None, as does a nil c.
func (c *Claims) Can(doc string) Perm {
	if c == nil {
		return None
	}
	best, bestLen := None, -1
	for pat, p := range c.Docs {
		if p > Write {
			p = None
		}
		prefix, isPrefix := strings.CutSuffix(pat, "*")
		switch {
		case !isPrefix:
			if pat == doc {
				return p // exact beats prefix
			}
		case len(prefix) > bestLen && strings.HasPrefix(doc, prefix):
			// Distinct matching prefixes have distinct lengths, so the
			// result does not depend on map iteration order.
			best, bestLen = p, len(prefix)
		}
	}
	return best
}
