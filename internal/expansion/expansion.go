// Package expansion expands $(VAR) references in strings as Kubernetes
// does in a container's env values, command and args: $(NAME) is replaced
// by the value of NAME when it is known and kept as written otherwise,
// and $$ stands for a literal $ ($$(NAME) is "$(NAME)", never expanded).
//
// Kanga resolves a pod's references in two places: the virtual node
// knows every source but the instance's IP, which only its host learns at
// start. The first pass therefore keeps escapes (Partial) so that the
// host's pass (Expand) sees the text as Kubernetes would have.
package expansion

import "strings"

// Lookup returns the value of a variable and whether it is known.
type Lookup func(name string) (string, bool)

// Expand replaces the known references of s and unescapes $$.
func Expand(s string, lookup Lookup) string { return expand(s, lookup, false) }

// Partial replaces the known references of s and leaves everything else,
// $$ included, for a later Expand.
func Partial(s string, lookup Lookup) string { return expand(s, lookup, true) }

// Has reports whether s refers to name (outside an escape).
func Has(s, name string) bool {
	found := false
	expand(s, func(n string) (string, bool) {
		if n == name {
			found = true
		}
		return "", false
	}, true)
	return found
}

func expand(s string, lookup Lookup, keepEscapes bool) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch next := s[i+1]; next {
		case '$':
			if keepEscapes {
				b.WriteString("$$")
			} else {
				b.WriteByte('$')
			}
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				// An unclosed reference is literal text.
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
