// Package packaging holds the Debian package's files: the systemd units,
// the example configurations (the same as `trustpool config example`) and
// nfpm.yaml, which `make deb` builds the package from. Its test builds the
// package, installs it, verifies the units and starts the server as its
// unit would.
package packaging
