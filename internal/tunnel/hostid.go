package tunnel

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidHostID is wrapped by every error CheckHostID returns.
var ErrInvalidHostID = errors.New("invalid host id")

// CheckHostID applies the host id rule, the same everywhere an id enters (tunnel registration, /hosts/{id},
// /v1/hosts/{id}, ?ids=, token minting, the agent's --id): 1 to MaxHostIDLen bytes of valid UTF-8 in which every
// character is visible, that is
//
//   - graphic (Unicode letters, marks, numbers, punctuation, symbols: unicode.IsGraphic), so no control (Cc),
//     format (Cf: U+200B zero width space, U+202E right-to-left override, U+FEFF...), private use, surrogate or
//     unassigned code points, and no line or paragraph separators;
//   - not a space of any kind (Zs, e.g. U+0020, U+00A0, U+3000);
//   - not default-ignorable (Unicode's Other_Default_Ignorable_Code_Point and Variation_Selector: Hangul fillers,
//     U+034F, U+FE0F...), which render as nothing;
//   - not U+FFFD, the replacement character that stands for bytes that were not text, nor U+2800, the blank
//     braille pattern, a symbol that prints as a space;
//   - not '/', which ends the id in a /hosts/{id}/... path;
//
// and the first character must not be a combining mark (M), which would attach to whatever is printed before the
// id.
//
// Two ids that print the same may still differ (homoglyphs such as Latin "a" and Cyrillic "а"); the rule keeps
// ids printable, not unique to the eye. It returns nil for a valid id, else an error wrapping ErrInvalidHostID
// that says why.
func CheckHostID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrInvalidHostID)
	case len(id) > MaxHostIDLen:
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidHostID, len(id), MaxHostIDLen)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidHostID)
	}
	for i, r := range id {
		if i == 0 && unicode.Is(unicode.M, r) {
			return fmt.Errorf("%w: starts with the combining mark %U", ErrInvalidHostID, r)
		}
		if !visible(r) {
			return fmt.Errorf("%w: %U at byte %d is not a visible character", ErrInvalidHostID, r, i)
		}
		if r == '/' {
			return fmt.Errorf("%w: '/' at byte %d", ErrInvalidHostID, i)
		}
	}
	return nil
}

// ValidHostID reports whether CheckHostID accepts id.
func ValidHostID(id string) bool {
	if id == "" || len(id) > MaxHostIDLen {
		return false
	}
	for i := 0; i < len(id); i++ { // the common case: printable ASCII, no '/'
		if c := id[i]; c <= ' ' || c >= 0x7f || c == '/' {
			return CheckHostID(id) == nil
		}
	}
	return true
}

// visible reports whether r may appear in a host id (see CheckHostID).
func visible(r rune) bool {
	return unicode.IsGraphic(r) && !unicode.Is(unicode.Zs, r) && r != utf8.RuneError && r != '\u2800' &&
		!unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) && !unicode.Is(unicode.Variation_Selector, r)
}
