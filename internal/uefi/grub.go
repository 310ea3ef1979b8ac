package uefi

import (
	"bytes"
	"strings"
)

// GrubKind is what a GRUB EV_IPL event of PCR 8 records, as its text says.
type GrubKind int

// The kinds of GRUB PCR 8 events.
const (
	GrubOther         GrubKind = iota // not a GRUB text this package knows
	GrubCommand                       // a command GRUB ran ("grub_cmd: linux /vmlinuz …")
	GrubKernelCmdline                 // the kernel command line ("kernel_cmdline: /vmlinuz root=…")
	GrubModuleCmdline                 // a module's command line (multiboot)
)

// grubPrefixes are the texts GRUB puts before what it measures: upstream
// GRUB 2.06 and later ("kernel_cmdline: ") and the older Fedora/RHEL
// patches ("grub_kernel_cmdline ").
var grubPrefixes = []struct {
	prefix string
	kind   GrubKind
}{
	{"kernel_cmdline: ", GrubKernelCmdline},
	{"grub_kernel_cmdline ", GrubKernelCmdline},
	{"module_cmdline: ", GrubModuleCmdline},
	{"grub_cmd: ", GrubCommand},
	{"grub_cmd ", GrubCommand},
}

// GrubText splits the data of a GRUB PCR 8 event into its kind and text, the
// text without the prefix and without trailing NULs. The prefix is not
// measured, so the kind is only what the data claims; the text is proven
// when one of GrubMeasured(text) hashes to the event's digest.
func GrubText(data []byte) (GrubKind, string) {
	s := string(bytes.TrimRight(data, "\x00"))
	for _, p := range grubPrefixes {
		if rest, ok := strings.CutPrefix(s, p.prefix); ok {
			return p.kind, rest
		}
	}
	return GrubOther, s
}

// GrubMeasured lists the byte strings GRUB may have hashed for a text: the
// text alone (upstream GRUB) or with its terminating NUL (the Fedora/RHEL
// patches for commands).
func GrubMeasured(text string) [][]byte {
	return [][]byte{[]byte(text), append([]byte(text), 0)}
}
