package auth

import (
	"errors"
	"net/http/httptest"
	"testing"
)

func TestTokenFromRequest(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		headers []string // Authorization values
		want    string
		wantErr error
	}{
		{"header", "/ws", []string{"Bearer abc"}, "abc", nil},
		{"header scheme lower case", "/ws", []string{"bearer abc"}, "abc", nil},
		{"header scheme mixed case", "/ws", []string{"BeArEr abc"}, "abc", nil},
		{"header extra spaces", "/ws", []string{"  Bearer   abc  "}, "abc", nil},
		{"query", "/ws?token=abc", nil, "abc", nil},
		{"query among others", "/ws?doc=readme&token=abc", nil, "abc", nil},
		{"both equal", "/ws?token=abc", []string{"Bearer abc"}, "abc", nil},
		{"neither", "/ws", nil, "", ErrMissing},
		{"empty query value", "/ws?token=", nil, "", ErrMissing},
		{"other scheme is ignored", "/ws", []string{"Basic dXNlcjpwdw=="}, "", ErrMissing},
		{"other scheme plus query", "/ws?token=abc", []string{"Basic dXNlcjpwdw=="}, "abc", nil},
		{"both differ", "/ws?token=abc", []string{"Bearer xyz"}, "", ErrInvalid},
		{"two headers differ", "/ws", []string{"Bearer abc", "Bearer xyz"}, "", ErrInvalid},
		{"two query values differ", "/ws?token=abc&token=xyz", nil, "", ErrInvalid},
		{"empty bearer", "/ws", []string{"Bearer"}, "", ErrInvalid},
		{"blank bearer", "/ws", []string{"Bearer   "}, "", ErrInvalid},
		{"scheme is a prefix only", "/ws", []string{"Bearerabc"}, "", ErrMissing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.url, nil)
			for _, h := range tt.headers {
				r.Header.Add("Authorization", h)
			}
			got, err := TokenFromRequest(r)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("TokenFromRequest error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("TokenFromRequest = %q, want %q", got, tt.want)
			}
		})
	}
}
