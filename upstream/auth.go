package upstream

import (
	"errors"
	"strings"
)

// Challenge is one parsed WWW-Authenticate challenge.
type Challenge struct {
	Scheme string            // lower-case: "bearer", "basic"
	Params map[string]string // keys lower-case
}

// ErrBadChallenge means a WWW-Authenticate header could not be parsed.
var ErrBadChallenge = errors.New("malformed WWW-Authenticate header")

// ParseChallenge parses the first challenge of a WWW-Authenticate header
// (RFC 7235): a scheme, then comma-separated key=value or key="quoted"
// parameters. Unknown parameters are kept; a malformed header is an error.
func ParseChallenge(h string) (Challenge, error) {
	const maxLen = 8 << 10
	if len(h) > maxLen {
		return Challenge{}, ErrBadChallenge
	}
	s := strings.TrimSpace(h)
	i := strings.IndexAny(s, " \t")
	scheme := s
	rest := ""
	if i >= 0 {
		scheme, rest = s[:i], s[i+1:]
	}
	if scheme == "" || !isToken(scheme) {
		return Challenge{}, ErrBadChallenge
	}
	c := Challenge{Scheme: strings.ToLower(scheme), Params: map[string]string{}}
	for {
		rest = strings.TrimLeft(rest, " \t,")
		if rest == "" {
			return c, nil
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			// token68 (e.g. Basic's) or another challenge's scheme: stop.
			return c, nil
		}
		key := strings.TrimSpace(rest[:eq])
		if !isToken(key) {
			return c, nil
		}
		rest = strings.TrimLeft(rest[eq+1:], " \t")
		var val string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			j := 1
			closed := false
			for ; j < len(rest); j++ {
				ch := rest[j]
				if ch == '\\' && j+1 < len(rest) {
					j++
					b.WriteByte(rest[j])
					continue
				}
				if ch == '"' {
					closed = true
					break
				}
				b.WriteByte(ch)
			}
			if !closed {
				return Challenge{}, ErrBadChallenge
			}
			val = b.String()
			rest = rest[j+1:]
		} else {
			j := strings.IndexAny(rest, ", \t")
			if j < 0 {
				j = len(rest)
			}
			val = rest[:j]
			rest = rest[j:]
		}
		c.Params[strings.ToLower(key)] = val
	}
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch <= ' ' || ch >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, ch) >= 0 {
			return false
		}
	}
	return s != ""
}
