package cli

import (
	"reflect"
	"strings"
	"testing"
)

// TestEveryFlagHasAnEnvVar: each flag of the long-running commands can be set from the environment, as container
// platforms configure them, under a SWITCHBOARD_ name.
func TestEveryFlagHasAnEnvVar(t *testing.T) {
	for _, v := range []any{Globals{}, ServeCmd{}, HostCmd{}} {
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			f := typ.Field(i)
			if !f.IsExported() || f.Tag.Get("hidden") != "" {
				continue
			}
			if env := f.Tag.Get("env"); !strings.HasPrefix(env, "SWITCHBOARD_") {
				t.Fatalf("%s.%s has env %q, want a SWITCHBOARD_ variable", typ.Name(), f.Name, env)
			}
		}
	}
}
