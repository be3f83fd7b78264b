package auth

import (
	"crypto/ed25519"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestRoundTrip(t *testing.T) {
	edPriv := testEdKey(1)
	edPub := edPriv.Public().(ed25519.PublicKey)
	otherPub := testEdKey(2).Public().(ed25519.PublicKey)
	tests := []struct {
		name   string
		issuer *Issuer
		cfg    Config
	}{
		{"HS256", mustHS256Issuer(t), Config{HS256Secret: testSecret()}},
		{"EdDSA", mustEdDSAIssuer(t, edPriv), Config{EdDSAPublicKeys: []ed25519.PublicKey{edPub}}},
		{"EdDSA second key of a rotation", mustEdDSAIssuer(t, edPriv), Config{EdDSAPublicKeys: []ed25519.PublicKey{otherPub, edPub}}},
		{"HS256 with both configured", mustHS256Issuer(t), Config{HS256Secret: testSecret(), EdDSAPublicKeys: []ed25519.PublicKey{edPub}}},
		{"EdDSA with both configured", mustEdDSAIssuer(t, edPriv), Config{HS256Secret: testSecret(), EdDSAPublicKeys: []ed25519.PublicKey{edPub}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := testClaims()
			want.Issuer = "https://auth.example"
			want.Audience = []string{"weft"}
			tok := mustIssue(t, tt.issuer, want)
			got, err := mustVerifier(t, tt.cfg).Verify(tok, t0)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !got.ExpiresAt.Equal(want.ExpiresAt) {
				t.Errorf("ExpiresAt = %v, want %v", got.ExpiresAt, want.ExpiresAt)
			}
			got.ExpiresAt = want.ExpiresAt
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("claims = %+v\nwant     %+v", *got, want)
			}
			if d := got.ExpiresIn(t0); d != time.Hour {
				t.Errorf("ExpiresIn = %v, want 1h", d)
			}
		})
	}
}

// TestVerifyRejects covers every way a token can be refused.
func TestVerifyRejects(t *testing.T) {
	secret := testSecret()
	edPriv := testEdKey(1)
	edPub := edPriv.Public().(ed25519.PublicKey)
	hsOnly := mustVerifier(t, Config{HS256Secret: secret})
	edOnly := mustVerifier(t, Config{EdDSAPublicKeys: []ed25519.PublicKey{edPub}})
	both := mustVerifier(t, Config{HS256Secret: secret, EdDSAPublicKeys: []ed25519.PublicKey{edPub}})
	strict := mustVerifier(t, Config{HS256Secret: secret, Issuer: "https://auth.example", Audience: "weft"})

	hsTok := mustIssue(t, mustHS256Issuer(t), testClaims())
	edTok := mustIssue(t, mustEdDSAIssuer(t, edPriv), testClaims())
	hs := func(m jwt.MapClaims) string { return mustSignRaw(t, jwt.SigningMethodHS256, secret, m) }
	ok := validMap()
	strictOK := with(with(ok, "iss", "https://auth.example"), "aud", []string{"other", "weft"})
	expired := t0.Add(-time.Minute).Unix()

	tests := []struct {
		name  string
		v     *Verifier
		tok   string
		want  error // nil: must verify
		alsoJ error // a jwt error that must also be in the chain
	}{
		{"baseline HS256", hsOnly, hs(ok), nil, nil},
		{"baseline strict", strict, hs(strictOK), nil, nil},
		{"empty", hsOnly, "", ErrMissing, nil},
		{"garbage", hsOnly, "not-a-jwt", ErrInvalid, jwt.ErrTokenMalformed},
		{"HS256 signature tampered", hsOnly, flipSigChar(hsTok), ErrInvalid, jwt.ErrTokenSignatureInvalid},
		{"EdDSA signature tampered", edOnly, flipSigChar(edTok), ErrInvalid, jwt.ErrTokenSignatureInvalid},
		{"payload tampered (escalate docs)", hsOnly,
			tamperPayload(hsTok, `{"sub":"u42","exp":9999999999,"docs":{"*":"rw"}}`), ErrInvalid, jwt.ErrTokenSignatureInvalid},
		{"HS256 with wrong secret", hsOnly,
			mustSignRaw(t, jwt.SigningMethodHS256, []byte("another secret, also 32 bytes...."), ok), ErrInvalid, jwt.ErrTokenSignatureInvalid},
		{"EdDSA with wrong key", edOnly,
			mustSignRaw(t, jwt.SigningMethodEdDSA, testEdKey(2), ok), ErrInvalid, jwt.ErrTokenSignatureInvalid},

		// Algorithm confusion: the verification key must come from the
		// Verifier's configuration, never be chosen by the token.
		{"alg confusion: HS256 keyed with the Ed25519 public key, EdDSA verifier", edOnly,
			mustSignRaw(t, jwt.SigningMethodHS256, []byte(edPub), ok), ErrInvalid, nil},
		{"alg confusion: HS256 keyed with the Ed25519 public key, both configured", both,
			mustSignRaw(t, jwt.SigningMethodHS256, []byte(edPub), ok), ErrInvalid, jwt.ErrTokenSignatureInvalid},
		{"alg none, HS256 verifier", hsOnly,
			mustSignRaw(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, ok), ErrInvalid, nil},
		{"alg none, EdDSA verifier", edOnly,
			mustSignRaw(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, ok), ErrInvalid, nil},
		{"EdDSA token, HS256-only verifier", hsOnly, edTok, ErrInvalid, nil},
		{"HS256 token, EdDSA-only verifier", edOnly, hsTok, ErrInvalid, nil},
		{"HS512 with the right secret", hsOnly,
			mustSignRaw(t, jwt.SigningMethodHS512, secret, ok), ErrInvalid, nil},

		// Registered claims.
		{"expired", hsOnly, hs(with(ok, "exp", expired)), ErrExpired, jwt.ErrTokenExpired},
		{"missing exp", hsOnly, hs(with(ok, "exp", nil)), ErrInvalid, jwt.ErrTokenRequiredClaimMissing},
		{"exp not a number", hsOnly, hs(with(ok, "exp", "tomorrow")), ErrInvalid, nil},
		{"not valid yet", hsOnly, hs(with(ok, "nbf", t0.Add(time.Minute).Unix())), ErrInvalid, jwt.ErrTokenNotValidYet},
		{"wrong issuer", strict, hs(with(strictOK, "iss", "https://evil.example")), ErrInvalid, jwt.ErrTokenInvalidIssuer},
		{"missing issuer", strict, hs(with(strictOK, "iss", nil)), ErrInvalid, jwt.ErrTokenRequiredClaimMissing},
		{"wrong audience", strict, hs(with(strictOK, "aud", "other")), ErrInvalid, jwt.ErrTokenInvalidAudience},
		{"missing audience", strict, hs(with(strictOK, "aud", nil)), ErrInvalid, jwt.ErrTokenRequiredClaimMissing},
		{"audience as a single string", strict, hs(with(strictOK, "aud", "weft")), nil, nil},
		{"issuer not enforced when unset", hsOnly, hs(with(ok, "iss", "https://anyone.example")), nil, nil},
		// Expiry is reported only when a fresh token would help.
		{"expired and wrong audience", strict,
			hs(with(with(strictOK, "exp", expired), "aud", "other")), ErrInvalid, jwt.ErrTokenInvalidAudience},
		{"expired and bad docs", hsOnly,
			hs(with(with(ok, "exp", expired), "docs", map[string]any{"a": "w"})), ErrInvalid, nil},

		// weft's own claims.
		{"missing sub", hsOnly, hs(with(ok, "sub", nil)), ErrInvalid, nil},
		{"missing docs grants nothing but verifies", hsOnly, hs(with(ok, "docs", nil)), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.v.Verify(tt.tok, t0)
			t.Logf("err: %v", err)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
			if tt.alsoJ != nil && !errors.Is(err, tt.alsoJ) {
				t.Errorf("Verify error = %v, want it to wrap %v", err, tt.alsoJ)
			}
			if other := map[error]error{ErrInvalid: ErrExpired, ErrExpired: ErrInvalid}[tt.want]; other != nil && errors.Is(err, other) {
				t.Errorf("Verify error = %v is both %v and %v", err, tt.want, other)
			}
			if c != nil {
				t.Errorf("Verify returned claims %+v along with an error", c)
			}
		})
	}
}

func TestVerifyBadDocs(t *testing.T) {
	v := mustVerifier(t, Config{HS256Secret: testSecret()})
	tests := []struct {
		name string
		docs any
	}{
		{"w", map[string]any{"notes/*": "w"}},
		{"empty value", map[string]any{"notes/*": ""}},
		{"upper case", map[string]any{"notes/*": "RW"}},
		{"rwx", map[string]any{"notes/*": "rwx"}},
		{"none", map[string]any{"notes/*": "none"}},
		{"number", map[string]any{"notes/*": 1}},
		{"null", map[string]any{"notes/*": nil}},
		{"array instead of object", []string{"notes/*"}},
		{"one bad among good", map[string]any{"a": "r", "b": "rw", "c": "x"}},
		{"star in the middle", map[string]any{"notes/*/x": "r"}},
		{"empty pattern", map[string]any{"": "r"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := mustSignRaw(t, jwt.SigningMethodHS256, testSecret(), with(validMap(), "docs", tt.docs))
			if _, err := v.Verify(tok, t0); !errors.Is(err, ErrInvalid) {
				t.Errorf("Verify error = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestVerifyLeeway(t *testing.T) {
	exp := t0.Add(time.Hour)
	tok := mustIssue(t, mustHS256Issuer(t), Claims{Subject: "u", ExpiresAt: exp})
	tests := []struct {
		name   string
		leeway time.Duration
		now    time.Time
		want   error
	}{
		{"default, before exp", 0, exp.Add(-time.Second), nil},
		{"default, at exp", 0, exp, nil},
		{"default, within 5s", 0, exp.Add(5*time.Second - time.Nanosecond), nil},
		{"default, at exp+5s", 0, exp.Add(5 * time.Second), ErrExpired},
		{"none, just before exp", -1, exp.Add(-time.Nanosecond), nil},
		{"none, at exp", -1, exp, ErrExpired},
		{"1m, after 59s", time.Minute, exp.Add(59 * time.Second), nil},
		{"1m, after 61s", time.Minute, exp.Add(61 * time.Second), ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := mustVerifier(t, Config{HS256Secret: testSecret(), Leeway: tt.leeway})
			_, err := v.Verify(tok, tt.now)
			if tt.want == nil && err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestExpiresIn(t *testing.T) {
	c := testClaims()
	for _, tt := range []struct {
		now  time.Time
		want time.Duration
	}{
		{t0, time.Hour},
		{t0.Add(time.Hour), 0},
		{t0.Add(time.Hour + time.Second), -time.Second},
	} {
		if got := c.ExpiresIn(tt.now); got != tt.want {
			t.Errorf("ExpiresIn(%v) = %v, want %v", tt.now, got, tt.want)
		}
	}
}

func TestNewVerifierConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"nothing configured", Config{}, false},
		{"empty secret and no keys", Config{HS256Secret: []byte{}, EdDSAPublicKeys: []ed25519.PublicKey{}}, false},
		{"short secret", Config{HS256Secret: []byte("short")}, false},
		{"secret of MinSecretLen", Config{HS256Secret: make([]byte, MinSecretLen)}, true},
		{"truncated public key", Config{EdDSAPublicKeys: []ed25519.PublicKey{make([]byte, 31)}}, false},
		{"public key", Config{EdDSAPublicKeys: []ed25519.PublicKey{testEdKey(1).Public().(ed25519.PublicKey)}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewVerifier(tt.cfg)
			if (err == nil) != tt.ok {
				t.Errorf("NewVerifier error = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// TestVerifierKeepsOwnKeys checks that NewVerifier copies its key
// material, so a caller zeroing or reusing its buffers cannot change what
// is accepted.
func TestVerifierKeepsOwnKeys(t *testing.T) {
	secret := testSecret()
	v := mustVerifier(t, Config{HS256Secret: secret})
	for i := range secret {
		secret[i] = 0
	}
	tok := mustIssue(t, mustHS256Issuer(t), testClaims())
	if _, err := v.Verify(tok, t0); err != nil {
		t.Fatalf("Verify after caller mutated its secret: %v", err)
	}
}

func TestIssueRejects(t *testing.T) {
	i := mustHS256Issuer(t)
	tests := []struct {
		name string
		edit func(*Claims)
	}{
		{"no subject", func(c *Claims) { c.Subject = "" }},
		{"no expiry", func(c *Claims) { c.ExpiresAt = time.Time{} }},
		{"None permission", func(c *Claims) { c.Docs["x"] = None }},
		{"unknown permission", func(c *Claims) { c.Docs["x"] = Perm(9) }},
		{"star in the middle", func(c *Claims) { c.Docs["a*b"] = Read }},
		{"empty pattern", func(c *Claims) { c.Docs[""] = Read }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testClaims()
			tt.edit(&c)
			if tok, err := i.Issue(c); err == nil {
				t.Errorf("Issue = %q, want an error", tok)
			}
		})
	}
	if _, err := NewHS256Issuer([]byte("short")); err == nil {
		t.Error("NewHS256Issuer accepted a short secret")
	}
	if _, err := NewEdDSAIssuer(make([]byte, 10)); err == nil {
		t.Error("NewEdDSAIssuer accepted a truncated key")
	}
}

// TestVerifyConcurrent runs Verify from many goroutines; with -race it
// checks that per-call options never share memory.
func TestVerifyConcurrent(t *testing.T) {
	v := mustVerifier(t, Config{HS256Secret: testSecret(), Issuer: "iss", Audience: "weft"})
	c := testClaims()
	c.Issuer, c.Audience = "iss", []string{"weft"}
	tok := mustIssue(t, mustHS256Issuer(t), c)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for n := range 50 {
				// Alternate valid and expired times to exercise both paths.
				now := t0
				want := error(nil)
				if (g+n)%2 == 1 {
					now, want = t0.Add(2*time.Hour), ErrExpired
				}
				if _, err := v.Verify(tok, now); !errors.Is(err, want) {
					t.Errorf("Verify error = %v, want %v", err, want)
					return
				}
			}
		})
	}
	wg.Wait()
}
