// Package pagetoken encodes the opaque page tokens of keyset-paginated listings, shared by the
// store backends so that a token means the same thing whichever database wrote it.
//
// A token is base64url (no padding) of a small JSON object holding the listing's scope (for
// example the resource kind) and the sort key of the last item returned. A token is rejected
// when its scope differs from the listing it is given to.
package pagetoken

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/fleetplane/fleetplane/store"
)

type token struct {
	Scope string   `json:"s"`
	After []string `json:"a"`
}

// Encode returns a token that continues the listing named scope after the item whose sort key
// is after.
func Encode(scope string, after ...string) string {
	b, err := json.Marshal(token{Scope: scope, After: after})
	if err != nil {
		// encoding/json fails only on unsupported types and values, and token has only strings.
		panic(fmt.Sprintf("pagetoken: encode: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode returns the sort key stored in s, which must have keyLen parts. The empty token
// returns nil. A malformed token, or one made for another scope, returns an error wrapping
// store.ErrInvalidArgument.
func Decode(s, scope string, keyLen int) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, invalid()
	}
	var t token
	if err := json.Unmarshal(b, &t); err != nil || len(t.After) != keyLen {
		return nil, invalid()
	}
	if t.Scope != scope {
		return nil, fmt.Errorf("%w: page token belongs to a %s listing, not %s; "+
			"start again without a token", store.ErrInvalidArgument, t.Scope, scope)
	}
	return t.After, nil
}

func invalid() error {
	return fmt.Errorf("%w: malformed page token; copy next_page_token from the previous "+
		"response or start again without a token", store.ErrInvalidArgument)
}
