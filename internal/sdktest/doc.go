// Package sdktest checks the public Go packages (agent, presence, webhook) the way a user meets them: from a
// separate module that imports them, built with the go command and run as its own process against a real relay.
// It has no code of its own; see external_test.go and testdata/app.
package sdktest
