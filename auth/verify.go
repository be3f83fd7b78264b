package auth

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MinSecretLen is the shortest HS256 secret accepted, in bytes: the size
// of the SHA-256 output (RFC 7518 §3.2). Anything shorter can be brute
// forced offline from a single token.
const MinSecretLen = 32

// Config says which tokens a Verifier accepts. At least one of
// HS256Secret and EdDSAPublicKeys must be set; the algorithms accepted
// follow from which are.
type Config struct {
	// HS256Secret enables HS256. It is shared with the issuer, so anybody
	// who can verify can also mint tokens; prefer EdDSA when the issuer is
	// a separate service. At least MinSecretLen bytes.
	HS256Secret []byte

	// EdDSAPublicKeys enables EdDSA (Ed25519). A token is accepted if any
	// key verifies it, which allows rotating keys without a flag day.
	EdDSAPublicKeys []ed25519.PublicKey

	// Issuer and Audience, when non-empty, must match the iss claim and
	// be among the aud claim respectively; tokens lacking them are then
	// rejected. Set them when one key signs tokens for several services.
	Issuer, Audience string

	// Leeway tolerates clock skew between issuer and server when checking
	// exp and nbf. Zero means the default, 5s; negative means none.
	Leeway time.Duration
}

const defaultLeeway = 5 * time.Second

// Verifier checks tokens against a fixed Config. It is safe for
// concurrent use.
type Verifier struct {
	secret []byte                 // nil unless HS256 is enabled
	keys   jwt.VerificationKeySet // empty unless EdDSA is enabled
	// opts are the parser options common to every Verify call; clipped,
	// so that appending the per-call time function never shares memory
	// between goroutines.
	opts []jwt.ParserOption
}

// NewVerifier checks cfg and returns a Verifier for it.
func NewVerifier(cfg Config) (*Verifier, error) {
	v := &Verifier{}
	var methods []string
	if len(cfg.HS256Secret) > 0 {
		if len(cfg.HS256Secret) < MinSecretLen {
			return nil, fmt.Errorf("auth: HS256 secret is %d bytes, want at least %d", len(cfg.HS256Secret), MinSecretLen)
		}
		v.secret = bytes.Clone(cfg.HS256Secret)
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	if len(cfg.EdDSAPublicKeys) > 0 {
		for i, k := range cfg.EdDSAPublicKeys {
			if len(k) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("auth: EdDSA public key %d is %d bytes, want %d", i, len(k), ed25519.PublicKeySize)
			}
			v.keys.Keys = append(v.keys.Keys, ed25519.PublicKey(bytes.Clone(k)))
		}
		methods = append(methods, jwt.SigningMethodEdDSA.Alg())
	}
	if len(methods) == 0 {
		return nil, errors.New("auth: no verification key configured (need an HS256 secret or EdDSA public keys)")
	}

	leeway := cfg.Leeway
	switch {
	case leeway == 0:
		leeway = defaultLeeway
	case leeway < 0:
		leeway = 0
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(leeway),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.opts = slices.Clip(opts)
	return v, nil
}

// Verify checks token at time now and returns its claims. It fails with
// ErrMissing for an empty token, with ErrExpired (which also wraps
// jwt.ErrTokenExpired) when the token is genuine but past exp+leeway and
// has nothing else wrong, and with ErrInvalid otherwise: bad signature,
// malformed token, an algorithm this Verifier was not configured for, no
// exp, wrong iss or aud, missing sub, or a docs claim with patterns or
// values other than "r" and "rw".
func (v *Verifier) Verify(token string, now time.Time) (*Claims, error) {
	if token == "" {
		return nil, ErrMissing
	}
	opts := append(v.opts, jwt.WithTimeFunc(func() time.Time { return now }))
	var w wireClaims
	if _, err := jwt.NewParser(opts...).ParseWithClaims(token, &w, v.key); err != nil {
		return nil, classify(err)
	}
	c, err := w.claims()
	if err != nil { // unreachable: Validate ran the same checks
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return c, nil
}

// key picks the verification key from the Verifier's own configuration
// by the token's algorithm. WithValidMethods already rejected other
// algorithms; this repeats the check so that a key can never be handed to
// a method it was not meant for.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	switch t.Method {
	case jwt.SigningMethodHS256:
		if v.secret != nil {
			return v.secret, nil
		}
	case jwt.SigningMethodEdDSA:
		if len(v.keys.Keys) > 0 {
			return v.keys, nil
		}
	}
	return nil, fmt.Errorf("signing method %v not configured", t.Method.Alg())
}

// notExpiryOnly are claim failures that a fresh token from the same
// issuer would not cure, so they win over expiry.
var notExpiryOnly = []error{
	errBadClaim,
	jwt.ErrTokenInvalidIssuer,
	jwt.ErrTokenInvalidAudience,
	jwt.ErrTokenInvalidSubject,
	jwt.ErrTokenNotValidYet,
	jwt.ErrTokenUsedBeforeIssued,
	jwt.ErrTokenRequiredClaimMissing,
}

// classify maps a jwt error to ErrExpired or ErrInvalid, keeping the jwt
// error in the chain for logs. The parser checks the signature before any
// claim, so ErrExpired is only ever reported for a genuine token.
func classify(err error) error {
	if errors.Is(err, jwt.ErrTokenExpired) &&
		!slices.ContainsFunc(notExpiryOnly, func(e error) bool { return errors.Is(err, e) }) {
		return fmt.Errorf("%w: %w", ErrExpired, err)
	}
	return fmt.Errorf("%w: %w", ErrInvalid, err)
}
