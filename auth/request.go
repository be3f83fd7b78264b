package auth

import (
	"fmt"
	"net/http"
	"strings"
)

// TokenFromRequest extracts the bearer token from r: the Authorization
// header with scheme "Bearer" (in any case), or the token query
// parameter, which exists because browsers cannot set headers on a
// WebSocket handshake. Query tokens can end up in access logs, one more
// reason tokens must expire.
//
// It returns ErrMissing when neither is present, and an error wrapping
// ErrInvalid when a Bearer header is empty or when the sources disagree:
// two different tokens in one request mean a confused or hostile client,
// and picking one would hide that. Authorization headers with other
// schemes are ignored, since a browser behind a proxy using Basic auth
// sends those on WebSocket handshakes too.
func TokenFromRequest(r *http.Request) (string, error) {
	var tok string
	set := func(t string) error {
		if tok != "" && tok != t {
			return fmt.Errorf("%w: request carries two different tokens", ErrInvalid)
		}
		tok = t
		return nil
	}
	for _, h := range r.Header.Values("Authorization") {
		scheme, t, _ := strings.Cut(strings.TrimSpace(h), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			continue
		}
		t = strings.TrimSpace(t)
		if t == "" {
			return "", fmt.Errorf("%w: empty Bearer credentials", ErrInvalid)
		}
		if err := set(t); err != nil {
			return "", err
		}
	}
	if r.URL != nil {
		for _, t := range r.URL.Query()["token"] {
			if t == "" {
				continue
			}
			if err := set(t); err != nil {
				return "", err
			}
		}
	}
	if tok == "" {
		return "", ErrMissing
	}
	return tok, nil
}
