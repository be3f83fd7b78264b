// Package auth turns bearer tokens into identities and per-document
// permissions for the weft server.
//
// # Model
//
// A client presents a JWT, in the Authorization header or, for browser
// WebSockets that cannot set headers, in the token query parameter (see
// [TokenFromRequest]). A [Verifier] checks it and yields [Claims]: who the
// client is (sub, name, an optional presence color) and what it may do,
// as a map from document id pattern to "r" or "rw" in the docs claim:
//
//	{"sub": "u42", "name": "Ada", "exp": 1767225600,
//	 "docs": {"notes/*": "rw", "notes/archive/*": "r", "readme": "r"}}
//
// [Claims.Can] answers for one document; the most specific pattern wins
// (exact id, then the longest prefix), so a token can grant a folder and
// still carve out read-only parts of it.
//
// Why permissions are per document and inside the token: weft documents
// are many and cheap, and the server keeps no user database. Putting
// patterns in the token lets whatever issues tokens (an application
// backend, `weft token`) decide access without the sync server calling
// back, and a prefix pattern keeps a token small when a user may open a
// whole folder.
//
// Why the algorithms are pinned: a JWT names its own algorithm, and a
// verifier that believes it can be fooled, e.g. into checking an HS256
// MAC keyed with the bytes of an Ed25519 public key, which anybody has,
// or into accepting alg "none". A Verifier accepts HS256 only when it was
// given a secret and EdDSA only when it was given public keys, and picks
// the key from its own configuration, never from the token.
//
// Why exp is required: a token may travel in a URL and end up in proxy
// and access logs, and the server cannot revoke it. An expiry bounds the
// damage, and tells the server when to ask a long-lived connection to
// re-authenticate ([Claims.ExpiresIn]). An expired token yields
// [ErrExpired], on which clients should fetch a new token; every other
// failure is [ErrInvalid], on which retrying the same token is pointless.
//
// Time is always passed in (Verify's now) rather than read from the
// clock, so tests and the server's tick decide what "now" is.
//
// A server run without any auth configuration (loopback development)
// uses [Anonymous] claims instead of a Verifier.
package auth
