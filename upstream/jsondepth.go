package upstream

import (
	"errors"
	"fmt"
)

// MaxJSONDepth bounds the nesting of JSON documents from upstreams
// (manifests, hub info, trees, token answers). Real ones nest a handful of
// levels; a hostile one could nest thousands to make every parse expensive.
const MaxJSONDepth = 64

// ErrTooDeep means a JSON document nests objects and arrays deeper than
// allowed.
var ErrTooDeep = errors.New("JSON nested too deeply")

// CheckJSONDepth returns ErrTooDeep when b nests objects or arrays more
// than max levels deep. It only counts brackets outside strings; it does not
// validate the document.
func CheckJSONDepth(b []byte, max int) error {
	depth := 0
	inStr, esc := false, false
	for _, c := range b {
		switch {
		case inStr:
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
		case c == '"':
			inStr = true
		case c == '{' || c == '[':
			depth++
			if depth > max {
				return fmt.Errorf("more than %d levels: %w", max, ErrTooDeep)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}
