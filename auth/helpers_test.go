package auth

import (
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// t0 is the tests' "now"; whole seconds, since exp has one-second precision.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testSecret() []byte { return []byte("0123456789abcdef0123456789abcdef") }

// testEdKey is deterministic so that failures reproduce byte for byte.
func testEdKey(seed byte) ed25519.PrivateKey {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	return ed25519.NewKeyFromSeed(s)
}

func testClaims() Claims {
	return Claims{
		Subject:   "u42",
		Name:      "Ada",
		Color:     "#e06c75",
		ExpiresAt: t0.Add(time.Hour),
		Docs:      map[string]Perm{"notes/*": Write, "readme": Read},
	}
}

func mustVerifier(tb testing.TB, cfg Config) *Verifier {
	tb.Helper()
	v, err := NewVerifier(cfg)
	if err != nil {
		tb.Fatalf("NewVerifier: %v", err)
	}
	return v
}

func mustHS256Issuer(tb testing.TB) *Issuer {
	tb.Helper()
	i, err := NewHS256Issuer(testSecret())
	if err != nil {
		tb.Fatalf("NewHS256Issuer: %v", err)
	}
	return i
}

func mustEdDSAIssuer(tb testing.TB, priv ed25519.PrivateKey) *Issuer {
	tb.Helper()
	i, err := NewEdDSAIssuer(priv)
	if err != nil {
		tb.Fatalf("NewEdDSAIssuer: %v", err)
	}
	return i
}

func mustIssue(tb testing.TB, i *Issuer, c Claims) string {
	tb.Helper()
	s, err := i.Issue(c)
	if err != nil {
		tb.Fatalf("Issue: %v", err)
	}
	return s
}

// mustSignRaw signs an arbitrary payload, bypassing Issuer's checks, to
// build the malformed and hostile tokens a Verifier must reject.
func mustSignRaw(tb testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		tb.Fatalf("SignedString: %v", err)
	}
	return s
}

// validMap is a payload that passes every check when signed correctly.
func validMap() jwt.MapClaims {
	return jwt.MapClaims{
		"sub":  "u42",
		"exp":  t0.Add(time.Hour).Unix(),
		"docs": map[string]any{"*": "r"},
	}
}

func with(m jwt.MapClaims, k string, v any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k2, v2 := range m {
		out[k2] = v2
	}
	if v == nil {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

// tamperPayload swaps the payload of tok for payload, keeping header and
// signature.
func tamperPayload(tok, payload string) string {
	parts := strings.Split(tok, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(payload))
	return strings.Join(parts, ".")
}

// flipSigChar changes a character in the middle of the signature. (The
// last character may carry unused bits, so changing it can be a no-op.)
func flipSigChar(tok string) string {
	b := []byte(tok)
	i := strings.LastIndexByte(tok, '.') + 10
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}
