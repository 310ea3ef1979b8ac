// Package tamper is trustpool's tamper matrix: tests that attack a running
// attestation server as a compromised node, a network attacker or the holder
// of a stolen, expired or wrong credential would, and check two things about
// every attack. First, it ends with the node untrusted or unknown, or the
// request refused, for a stated reason code or HTTP status. Second, nothing
// already stored is lost or changed on the way: hosts, references, the
// policy, every host's last verified evidence and the audit log are compared
// with a snapshot after each case.
//
// Attacks that a real TPM can produce (a replayed or relayed quote, a quote
// over fewer PCRs or a weaker bank, an edited event log, a re-used join
// token) run against real trust agents on swtpm, whose TPM sits behind a
// compromised agent (the agent's code is the attacker's; the TPM is not).
// Attacks that no TPM would sign (a non-quote structure, a forged signer
// name, a swapped attestation key) run against simulated nodes
// (verify/verifytest) behind an HTTPS fake agent. docs/threat-model.md maps
// each case to the adversary it stands for.
//
// The package has no code outside its tests.
package tamper
