package auth

import (
	"bytes"
	"crypto/ed25519"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// Issuer mints tokens a matching Verifier accepts. It exists for tests,
// tools and the `weft token` command; production deployments usually
// mint tokens in their own backend with any JWT library, following the
// claim layout in the package documentation.
type Issuer struct {
	method jwt.SigningMethod
	key    any // []byte for HS256, ed25519.PrivateKey for EdDSA
}

// NewHS256Issuer returns an Issuer signing with HS256 under secret, which
// must be at least MinSecretLen bytes, as NewVerifier requires.
func NewHS256Issuer(secret []byte) (*Issuer, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("auth: HS256 secret is %d bytes, want at least %d", len(secret), MinSecretLen)
	}
	return &Issuer{method: jwt.SigningMethodHS256, key: bytes.Clone(secret)}, nil
}

// NewEdDSAIssuer returns an Issuer signing with Ed25519 under priv.
func NewEdDSAIssuer(priv ed25519.PrivateKey) (*Issuer, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("auth: EdDSA private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	return &Issuer{method: jwt.SigningMethodEdDSA, key: ed25519.PrivateKey(bytes.Clone(priv))}, nil
}

// Issue signs c. It refuses claims a Verifier would reject on sight: no
// Subject, no ExpiresAt, or Docs with a malformed pattern or a permission
// other than Read or Write. ExpiresAt is truncated to whole seconds.
func (i *Issuer) Issue(c Claims) (string, error) {
	w, err := toWire(c)
	if err != nil {
		return "", fmt.Errorf("auth: issue: %w", err)
	}
	s, err := jwt.NewWithClaims(i.method, w).SignedString(i.key)
	if err != nil {
		return "", fmt.Errorf("auth: issue: %w", err)
	}
	return s, nil
}
