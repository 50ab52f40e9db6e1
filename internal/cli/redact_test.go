package cli

import (
	"strings"
	"testing"
)

func TestRedactDirectory(t *testing.T) {
	tests := []struct{ in, want string }{
		{"memory", "memory"},
		{"redis://:pw@h:1/0", "redis://REDACTED@h:1/0"},
		{"redis://u:pw@a:1,redis://u:pw@b:2", "redis://REDACTED@a:1,redis://REDACTED@b:2"},
		{"a:1,b:2", "a:1,b:2"},
		{"redis://h:1/0?x=a@b", "redis://h:1/0?x=a@b"},
		{"redis-sentinel://u:pw@s1,s2:26380/1?master=m&sentinel_password=spw&sentinel_username=su",
			"redis-sentinel://REDACTED@s1,s2:26380/1?master=m&sentinel_password=REDACTED&sentinel_username=su"},
		{"rediss-sentinel://s1?sentinel_password=a&sentinel_password=b&master=m",
			"rediss-sentinel://s1?sentinel_password=REDACTED&sentinel_password=REDACTED&master=m"},
	}
	for _, tt := range tests {
		got := redactDirectory(tt.in)
		if got != tt.want {
			t.Fatalf("redactDirectory(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if strings.Contains(got, "pw") {
			t.Fatalf("redactDirectory(%q) = %q shows a password", tt.in, got)
		}
	}
}
