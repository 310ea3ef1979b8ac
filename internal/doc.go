// Package internal holds trustpool's packages. It has no code of its own:
// its test (deps_test.go) holds the rules on which package may import what.
package internal
