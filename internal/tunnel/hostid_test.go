package tunnel

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestCheckHostID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"org:machine", true},
		{"a", true},
		{strings.Repeat("x", MaxHostIDLen), true},
		{"café-ünïcode", true},
		{"東京:ノード", true},
		{"e\u0301", true},                            // a combining mark is visible with its base
		{"a_b.c-d~e!$&'()*+,;=@?#%", true},           // ASCII punctuation other than '/'
		{"", false},                                  // empty
		{strings.Repeat("x", MaxHostIDLen+1), false}, // too long
		{"a/b", false},                               // path separator
		{"a b", false},                               // space
		{"a\tb", false},                              // control
		{"a\x7fb", false},                            // DEL
		{"a\u0085b", false},                          // C1 control (NEL)
		{"a\u00a0b", false},                          // no-break space (Zs)
		{"a\u3000b", false},                          // ideographic space (Zs)
		{"a\u2028b", false},                          // line separator (Zl)
		{"a\u2029b", false},                          // paragraph separator (Zp)
		{"a\u200bb", false},                          // zero width space (Cf)
		{"a\u200db", false},                          // zero width joiner (Cf)
		{"a\u202eb", false},                          // right-to-left override (Cf)
		{"a\u2066b", false},                          // left-to-right isolate (Cf)
		{"\ufeffa", false},                           // byte order mark (Cf)
		{"a\u00adb", false},                          // soft hyphen (Cf)
		{"a\u034fb", false},                          // combining grapheme joiner (default ignorable)
		{"a\u3164b", false},                          // Hangul filler (default ignorable)
		{"a\ufe0fb", false},                          // variation selector
		{"a\U000e0041b", false},                      // tag character (Cf)
		{"a\ue000b", false},                          // private use
		{"a\ufffdb", false},                          // replacement character
		{"a\u2800b", false},                          // blank braille pattern
		{"\u0301a", false},                           // starts with a combining mark
		{"a\u0301", true},                            // a mark after its base
		{"a\xffb", false},                            // invalid UTF-8
		{"a\xed\xa0\x80b", false},                    // surrogate, encoded
		{"a\U0010fffeb", false},                      // noncharacter, unassigned
		{"\u202e" + strings.Repeat("x", MaxHostIDLen-3), false}, // within the length, still refused
	} {
		err := CheckHostID(tc.id)
		if got := err == nil; got != tc.want {
			t.Errorf("CheckHostID(%q) = %v, want valid %v", tc.id, err, tc.want)
		}
		if err != nil && !errors.Is(err, ErrInvalidHostID) {
			t.Errorf("CheckHostID(%q) = %v, does not wrap ErrInvalidHostID", tc.id, err)
		}
		if got := ValidHostID(tc.id); got != tc.want {
			t.Errorf("ValidHostID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

// FuzzHostID: ValidHostID and CheckHostID agree, and an accepted id obeys the rule as stated independently: length,
// UTF-8, and no rune that is a control, format, space, separator, private-use, ignorable or '/'.
func FuzzHostID(f *testing.F) {
	for _, s := range []string{"org:m", "a/b", "a\u200bb", "\u202e", "a b", "\xff", "e\u0301", "a\u3164", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		ok := ValidHostID(id)
		if err := CheckHostID(id); (err == nil) != ok {
			t.Fatalf("ValidHostID(%q) = %v but CheckHostID = %v", id, ok, err)
		}
		if !ok {
			return
		}
		if id == "" || len(id) > MaxHostIDLen || !utf8.ValidString(id) {
			t.Fatalf("accepted %q: length %d or invalid UTF-8", id, len(id))
		}
		if first, _ := utf8.DecodeRuneInString(id); unicode.Is(unicode.M, first) {
			t.Fatalf("accepted %q, which starts with a combining mark", id)
		}
		for _, r := range id {
			if r == '/' || r == utf8.RuneError || r == '\u2800' || unicode.IsControl(r) || unicode.IsSpace(r) ||
				unicode.In(r, unicode.Cf, unicode.Co, unicode.Cs, unicode.Zs, unicode.Zl, unicode.Zp) ||
				unicode.In(r, unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector) ||
				!unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S) {
				t.Fatalf("accepted %q with %U", id, r)
			}
		}
	})
}
