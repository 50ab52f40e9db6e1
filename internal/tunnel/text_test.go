package tunnel

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCleanText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Alice's laptop", "Alice's laptop"},
		{"  two\t\tspaces\n", "two spaces"},
		{"bidi \u202etxt.exe", "bidi txt.exe"},
		{"zero\u200bwidth", "zerowidth"},
		{"ctl\x00\x1b[31m", "ctl[31m"},
		{"bad\xffutf8", "badutf8"},
		{"ideographic\u3000space", "ideographic space"},
		{"日本語", "日本語"},
		{"", ""},
	} {
		if got := CleanText(tc.in, 64); got != tc.want {
			t.Errorf("CleanText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := CleanText("ab日本", 4); got != "ab" { // 日 is 3 bytes: it does not fit whole
		t.Errorf("cut inside a character: %q", got)
	}
}

// FuzzCleanText: whatever a host sends, the cleaned text is valid UTF-8 within max bytes, holds no invisible
// character and no doubled or edge space, and cleaning it again changes nothing.
func FuzzCleanText(f *testing.F) {
	f.Add("name \u202e\u200b\x00 x", 16)
	f.Add(strings.Repeat("é", 100), 7)
	f.Fuzz(func(t *testing.T, s string, max int) {
		max = max & 0x3ff
		got := CleanText(s, max)
		if len(got) > max || !utf8.ValidString(got) {
			t.Fatalf("CleanText(%q, %d) = %q: too long or not UTF-8", s, max, got)
		}
		if strings.Contains(got, "  ") || strings.TrimSpace(got) != got {
			t.Fatalf("CleanText(%q) = %q: spaces not folded", s, got)
		}
		for _, r := range got {
			if r != ' ' && !visible(r) {
				t.Fatalf("CleanText(%q) = %q keeps %U", s, got, r)
			}
		}
		if again := CleanText(got, max); again != got {
			t.Fatalf("not idempotent: %q then %q", got, again)
		}
	})
}
