package main

// weft token: mint a token the server accepts, for development, demos and
// tests. Production deployments mint tokens in their own backend with any
// JWT library, following the claim layout in auth's package documentation.

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/weft-sync/weft/auth"
)

type tokenConfig struct {
	secret, keyFile  string
	genKey           string
	sub, name, color string
	docs             listFlag
	ttl              time.Duration
	issuer, audience string
}

func tokenFlags(fs *flag.FlagSet) func(args []string, stdout, stderr io.Writer) int {
	c := &tokenConfig{}
	var binds []envFlag
	env := func(name, envName string) string { return bindEnv(&binds, name, envName) }
	fs.StringVar(&c.secret, "secret", "",
		"sign with HS256 under this `secret`, the server's -jwt-secret"+env("secret", "WEFT_JWT_SECRET"))
	fs.StringVar(&c.keyFile, "key", "",
		"sign with EdDSA under this Ed25519 private key `PEM` (PKCS #8)"+env("key", "WEFT_JWT_KEY"))
	fs.StringVar(&c.genKey, "genkey", "",
		"write a new Ed25519 key pair to `PREFIX`.key (private, 0600) and PREFIX.pub "+
			"(for the server's -jwt-pubkey), then exit")
	fs.StringVar(&c.sub, "sub", "dev", "subject: the user `id`")
	fs.StringVar(&c.name, "name", "", "display `name` shown next to the user's cursor")
	fs.StringVar(&c.color, "color", "", "presence `color`, e.g. #e06c75")
	fs.Var(&c.docs, "docs",
		"document `grants` PATTERN=r|rw, comma-separated or repeated; a PATTERN ending in * is a "+
			"prefix (default \"*=rw\": every document, read-write)")
	fs.DurationVar(&c.ttl, "ttl", 24*time.Hour, "how long the token is valid")
	fs.StringVar(&c.issuer, "issuer", "", "iss `claim`, the server's -jwt-issuer"+env("issuer", "WEFT_JWT_ISSUER"))
	fs.StringVar(&c.audience, "audience", "", "aud `claim`, the server's -jwt-audience"+env("audience", "WEFT_JWT_AUDIENCE"))

	return func(args []string, stdout, stderr io.Writer) int {
		if err := applyEnv(fs, binds, os.LookupEnv); err != nil {
			fmt.Fprintf(stderr, "weft token: %v\n", err)
			return 2
		}
		if len(args) > 0 {
			fmt.Fprintf(stderr, "weft token: unexpected arguments %q\n", args)
			return 2
		}
		if c.genKey != "" {
			if err := genKeyPair(c.genKey, stdout); err != nil {
				fmt.Fprintf(stderr, "weft token: %v\n", err)
				return 1
			}
			return 0
		}
		tok, err := c.issue(time.Now())
		var ue usageError
		switch {
		case errors.As(err, &ue):
			fmt.Fprintf(stderr, "weft token: %v\n", ue.error)
			return 2
		case err != nil:
			fmt.Fprintf(stderr, "weft token: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, tok)
		return 0
	}
}

func (c *tokenConfig) issue(now time.Time) (string, error) {
	var iss *auth.Issuer
	var err error
	switch {
	case c.secret != "" && c.keyFile != "":
		return "", usagef("give -secret or -key, not both")
	case c.secret != "":
		iss, err = auth.NewHS256Issuer([]byte(c.secret))
		if err != nil {
			return "", usageError{err}
		}
	case c.keyFile != "":
		priv, err := readEd25519PrivateKey(c.keyFile)
		if err != nil {
			return "", err
		}
		if iss, err = auth.NewEdDSAIssuer(priv); err != nil {
			return "", err
		}
	default:
		return "", usagef("no signing key: set WEFT_JWT_SECRET (or -secret) or -key")
	}
	if c.ttl <= 0 {
		return "", usagef("-ttl must be positive")
	}
	docs := map[string]auth.Perm{}
	grants := c.docs
	if len(grants) == 0 {
		grants = listFlag{"*=rw"}
	}
	for _, g := range grants {
		i := strings.LastIndexByte(g, '=')
		if i <= 0 {
			return "", usagef("-docs %q: want PATTERN=r or PATTERN=rw", g)
		}
		switch pat, p := g[:i], g[i+1:]; p {
		case "r", "read":
			docs[pat] = auth.Read
		case "rw", "write":
			docs[pat] = auth.Write
		default:
			return "", usagef("-docs %q: permission %q, want r or rw", g, p)
		}
	}
	cl := auth.Claims{
		Subject:   c.sub,
		Name:      c.name,
		Color:     c.color,
		Issuer:    c.issuer,
		ExpiresAt: now.Add(c.ttl),
		Docs:      docs,
	}
	if c.audience != "" {
		cl.Audience = []string{c.audience}
	}
	tok, err := iss.Issue(cl)
	if err != nil {
		return "", usageError{err}
	}
	return tok, nil
}

func readEd25519PrivateKey(file string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return nil, fmt.Errorf("%s: no PEM \"PRIVATE KEY\" block", file)
		}
		if blk.Type != "PRIVATE KEY" {
			continue
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s: a %T, want an Ed25519 private key", file, k)
		}
		return ek, nil
	}
}

// genKeyPair writes prefix.key and prefix.pub in the PEM forms openssl
// uses (PKCS #8 and PKIX), so either tool can read the other's keys.
func genKeyPair(prefix string, stdout io.Writer) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	write := func(name string, mode os.FileMode, typ string, der []byte) error {
		// O_EXCL: never overwrite a key somebody may depend on.
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		if err := pem.Encode(f, &pem.Block{Type: typ, Bytes: der}); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	if err := write(prefix+".key", 0o600, "PRIVATE KEY", privDER); err != nil {
		return err
	}
	if err := write(prefix+".pub", 0o644, "PUBLIC KEY", pubDER); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "private key: %s.key (weft token -key)\npublic key:  %s.pub (weft serve -jwt-pubkey)\n", prefix, prefix)
	return nil
}
