package client_test

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/weft-sync/weft/auth"
)

// fixedVerifier accepts one token, for ever.
type fixedVerifier struct{ good string }

func (v fixedVerifier) Verify(tok string, _ time.Time) (*auth.Claims, error) {
	if tok != v.good {
		return nil, auth.ErrInvalid
	}
	return auth.Anonymous("tester"), nil
}

// expiringVerifier accepts the tokens it issued until they expire.
type expiringVerifier struct {
	now  func() time.Time
	life time.Duration

	mu   sync.Mutex
	n    int
	exps map[string]time.Time
}

func (v *expiringVerifier) issue() string { return v.issueFor(v.life) }

func (v *expiringVerifier) issueFor(life time.Duration) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.exps == nil {
		v.exps = make(map[string]time.Time)
	}
	v.n++
	tok := fmt.Sprintf("tok-%d", v.n)
	v.exps[tok] = v.now().Add(life)
	return tok
}

func (v *expiringVerifier) Verify(tok string, now time.Time) (*auth.Claims, error) {
	v.mu.Lock()
	exp, ok := v.exps[tok]
	v.mu.Unlock()
	switch {
	case !ok:
		return nil, auth.ErrInvalid
	case !now.Before(exp):
		return nil, auth.ErrExpired
	}
	c := auth.Anonymous("tester")
	c.ExpiresAt = exp
	return c, nil
}

func asError[T error](err error, target *T) bool { return errors.As(err, target) }

func errorsIs(err, target error) bool { return errors.Is(err, target) }
