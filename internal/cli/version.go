package cli

import (
	"fmt"

	"github.com/switchboard-relay/switchboard/internal/version"
)

// VersionCmd prints the build's version.
type VersionCmd struct{}

// Run prints the version: the release tag, or devel+<revision>[-dirty] (internal/version), and nothing else, so
// scripts can compare it as it is.
func (VersionCmd) Run(g *Globals) error {
	_, err := fmt.Fprintln(g.stdout, version.String())
	return err
}
