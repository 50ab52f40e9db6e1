package auth

import (
	"net/http"
	"net/url"
	"testing"
)

func TestFromRequest(t *testing.T) {
	tests := []struct {
		name      string
		header    string
		target    string
		wantToken string
		wantQuery bool
	}{
		{"bearer", "Bearer abc.def.ghi", "/x", "abc.def.ghi", false},
		{"bearer lowercase", "bearer abc", "/x", "abc", false},
		{"bearer upper", "BEARER abc", "/x", "abc", false},
		{"bearer extra spaces", "Bearer   abc  ", "/x", "abc", false},
		{"basic ignored", "Basic dXNlcjpwYXNz", "/x", "", false},
		{"bearer empty", "Bearer ", "/x", "", false},
		{"bearer no space", "Bearerabc", "/x", "", false},
		{"query", "", "/x?access_token=q.r.s", "q.r.s", true},
		{"query among others", "", "/x?a=1&access_token=tok&b=2", "tok", true},
		{"query escaped", "", "/x?access_token=a%2Bb", "a+b", true},
		{"query escaped name", "", "/x?access%5Ftoken=tok", "tok", true},
		{"query first wins", "", "/x?access_token=one&access_token=two", "one", true},
		{"query empty value", "", "/x?access_token=", "", false},
		{"query bad escape", "", "/x?access_token=%zz", "", false},
		{"query similar name", "", "/x?access_token_x=tok&xaccess_token=tok", "", false},
		{"header wins over query", "Bearer h", "/x?access_token=q", "h", false},
		{"basic falls back to query", "Basic x", "/x?access_token=q", "q", true},
		{"none", "", "/x?a=b", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := http.NewRequest(http.MethodGet, "http://relay"+tt.target, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			tok, q := FromRequest(r)
			if tok != tt.wantToken || q != tt.wantQuery {
				t.Fatalf("FromRequest = %q, %v; want %q, %v", tok, q, tt.wantToken, tt.wantQuery)
			}
		})
	}
}

func TestStripQueryToken(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"/p", "/p"},
		{"/p?a=1", "/p?a=1"},
		{"/p?access_token=x", "/p"},
		{"/p?a=1&access_token=x", "/p?a=1"},
		{"/p?access_token=x&a=1", "/p?a=1"},
		{"/p?b=%2F&access_token=x&a=1+2&c", "/p?b=%2F&a=1+2&c"},
		{"/p?access_token=x&access_token=y&z=1", "/p?z=1"},
		{"/p?access%5Ftoken=x&z=1", "/p?z=1"},
		{"/p?access_token&z=1", "/p?z=1"},
		{"/p?a=1&&b=2&access_token=x", "/p?a=1&&b=2"},
		{"/p?z=2&a=1&y", "/p?z=2&a=1&y"},
		{"/p?xaccess_token=1&access_token_=2", "/p?xaccess_token=1&access_token_=2"},
		{"/p?a=%zz&access_token=x", "/p?a=%zz"},
		{"/p?a=access_token", "/p?a=access_token"},
		{"/p?access_token=x#frag", "/p#frag"},
		// A host's framework may split at ';' as well: no token segment is left there either, and the other
		// separators stay as they were.
		{"/p?a=1;access_token=x&b=2", "/p?a=1&b=2"},
		{"/p?access_token=x;a=1;b=2", "/p?a=1;b=2"},
		{"/p?a=1;b=2&c=3;access_token=x", "/p?a=1;b=2&c=3"},
		{"/p?a=1;b=2", "/p?a=1;b=2"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := url.Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			StripQueryToken(u)
			if got := u.String(); got != tt.want {
				t.Fatalf("StripQueryToken(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	StripQueryToken(nil) // must not panic
}

func TestRedactURL(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"/p", "/p"},
		{"/p?a=1", "/p?a=1"},
		{"/p?access_token=secret", "/p?access_token=REDACTED"},
		{"/p?a=1&access_token=secret&b=2", "/p?a=1&access_token=REDACTED&b=2"},
		{"/p?access%5Ftoken=secret", "/p?access_token=REDACTED"},
		{"/p?access_token=a&access_token=b", "/p?access_token=REDACTED&access_token=REDACTED"},
		{"https://user:pw@relay.example/hosts/h/?access_token=s", "https://user:xxxxx@relay.example/hosts/h/?access_token=REDACTED"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := url.Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			before := u.String()
			if got := RedactURL(u); got != tt.want {
				t.Fatalf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if u.String() != before {
				t.Fatalf("RedactURL modified its argument: %q", u.String())
			}
		})
	}
	if got := RedactURL(nil); got != "" {
		t.Fatalf("RedactURL(nil) = %q", got)
	}
}
