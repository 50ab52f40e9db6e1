package tunnel

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// CleanText makes a host's self-description (its name, OS, agent version, label keys and values, which the
// presence API shows to clients and dashboards) safe to display: invalid UTF-8 and every character that is not
// visible — controls, format and bidi controls, zero-width and other default-ignorable characters — are dropped,
// any run of spaces (Unicode Zs, tabs, newlines) becomes one ASCII space, the ends are trimmed, and the result is
// cut at a character boundary to at most max bytes. So a host cannot make its name print like another's, reorder
// the text around it, or break a log line.
func CleanText(s string, max int) string {
	var b strings.Builder
	space := false
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == utf8.RuneError && size <= 1:
			continue
		case unicode.IsSpace(r) || unicode.Is(unicode.Zs, r):
			space = b.Len() > 0
			continue
		case !visible(r):
			continue
		}
		n := utf8.RuneLen(r)
		if space {
			n++
		}
		if b.Len()+n > max {
			break
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}
