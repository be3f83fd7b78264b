package auth_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/weft-sync/weft/auth"
)

func ExampleVerifier_Verify() {
	secret := []byte("an example secret of 32+ bytes..")
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	issuer, err := auth.NewHS256Issuer(secret)
	if err != nil {
		panic(err)
	}
	token, err := issuer.Issue(auth.Claims{
		Subject:   "u42",
		Name:      "Ada",
		ExpiresAt: now.Add(time.Hour),
		Docs:      map[string]auth.Perm{"notes/*": auth.Write, "notes/todo": auth.Read, "*": auth.Read},
	})
	if err != nil {
		panic(err)
	}

	v, err := auth.NewVerifier(auth.Config{HS256Secret: secret})
	if err != nil {
		panic(err)
	}
	c, err := v.Verify(token, now)
	if err != nil {
		panic(err)
	}
	fmt.Println(c.Name, c.Subject, "expires in", c.ExpiresIn(now))
	for _, doc := range []string{"notes/ideas", "notes/todo", "readme"} {
		fmt.Printf("%s: %v\n", doc, c.Can(doc))
	}

	_, err = v.Verify(token, now.Add(2*time.Hour))
	fmt.Println(errors.Is(err, auth.ErrExpired))
	// Output:
	// Ada u42 expires in 1h0m0s
	// notes/ideas: write
	// notes/todo: read
	// readme: read
	// true
}
