package auth

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Sentinel errors. Callers branch on them: ErrMissing means "ask for
// credentials", ErrExpired means "fetch a new token", and ErrInvalid means
// that this token will never be accepted.
var (
	ErrMissing = errors.New("auth: missing token")
	ErrExpired = errors.New("auth: token expired")
	ErrInvalid = errors.New("auth: invalid token")
)

// Claims is what a verified token says about its holder.
type Claims struct {
	Subject string // sub: stable user id; never empty in a verified token
	Name    string // name: display name for presence; may be empty
	Color   string // color: optional presence color, passed through unchecked

	Issuer   string   // iss: checked by the Verifier only if Config.Issuer is set
	Audience []string // aud: checked by the Verifier only if Config.Audience is set

	// ExpiresAt is exp, at one-second precision. It is never zero in a
	// verified token; zero means "no expiry" and occurs only in Anonymous.
	ExpiresAt time.Time

	// Docs maps document id patterns to permissions (the docs claim); see
	// Can for the matching rule. Values are Read or Write.
	Docs map[string]Perm
}

// ExpiresIn returns how long c remains valid at now, negative once
// expired. It ignores the Verifier's leeway, so a server that closes or
// re-authenticates connections at this point does so a little early,
// never late. Claims without an expiry (Anonymous) never expire.
func (c *Claims) ExpiresIn(now time.Time) time.Duration {
	if c.ExpiresAt.IsZero() {
		return math.MaxInt64
	}
	return c.ExpiresAt.Sub(now)
}

// Anonymous returns the claims the server uses for every client when it
// runs with no auth configured, which it should do only on a loopback
// listener for development: read-write on every document, no expiry.
// Never hand these out when a Verifier is configured, e.g. as a fallback
// for a missing or failed token; that would bypass authentication.
func Anonymous(name string) *Claims {
	return &Claims{
		Subject: "anonymous",
		Name:    name,
		Docs:    map[string]Perm{"*": Write},
	}
}

// wireClaims is the JWT payload. It is kept apart from Claims so that the
// public type has plain Go fields (time.Time, Perm) and the JSON spelling
// ("r"/"rw", NumericDate) is decided in one place.
type wireClaims struct {
	jwt.RegisteredClaims
	Name  string            `json:"name,omitempty"`
	Color string            `json:"color,omitempty"`
	Docs  map[string]string `json:"docs,omitempty"`
}

// errBadClaim marks failures of weft's own claim checks, so that Verify
// can tell them apart from expiry.
var errBadClaim = errors.New("bad weft claim")

// Validate is called by the jwt parser, after the signature checked out,
// alongside its own exp/iss/aud checks, so that all claim problems are
// reported together.
func (w *wireClaims) Validate() error {
	if w.Subject == "" {
		return fmt.Errorf("%w: missing sub", errBadClaim)
	}
	if _, err := parseDocs(w.Docs); err != nil {
		return fmt.Errorf("%w: %w", errBadClaim, err)
	}
	return nil
}

func parseDocs(docs map[string]string) (map[string]Perm, error) {
	out := make(map[string]Perm, len(docs))
	for pat, v := range docs {
		if err := checkPattern(pat); err != nil {
			return nil, fmt.Errorf("docs: %w", err)
		}
		p, err := parsePerm(v)
		if err != nil {
			return nil, fmt.Errorf("docs[%q]: %w", pat, err)
		}
		out[pat] = p
	}
	return out, nil
}

func (w *wireClaims) claims() (*Claims, error) {
	docs, err := parseDocs(w.Docs)
	if err != nil {
		return nil, err
	}
	c := &Claims{
		Subject:  w.Subject,
		Name:     w.Name,
		Color:    w.Color,
		Issuer:   w.Issuer,
		Audience: w.Audience,
		Docs:     docs,
	}
	if w.ExpiresAt != nil {
		c.ExpiresAt = w.ExpiresAt.Time
	}
	return c, nil
}

func toWire(c Claims) (*wireClaims, error) {
	if c.Subject == "" {
		return nil, errors.New("missing Subject")
	}
	if c.ExpiresAt.IsZero() {
		return nil, errors.New("missing ExpiresAt: weft tokens must expire")
	}
	w := &wireClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.Subject,
			Issuer:    c.Issuer,
			Audience:  jwt.ClaimStrings(c.Audience),
			ExpiresAt: jwt.NewNumericDate(c.ExpiresAt),
		},
		Name:  c.Name,
		Color: c.Color,
		Docs:  make(map[string]string, len(c.Docs)),
	}
	for pat, p := range c.Docs {
		if err := checkPattern(pat); err != nil {
			return nil, fmt.Errorf("docs: %w", err)
		}
		v, err := p.claimValue()
		if err != nil {
			return nil, fmt.Errorf("docs[%q]: %w", pat, err)
		}
		w.Docs[pat] = v
	}
	return w, nil
}
