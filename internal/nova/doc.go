// Package nova connects trustpool's verdicts to OpenStack Nova, both ways Nova
// has asked for host trust:
//
//   - PollHosts answers the OpenAttestation API that Nova's TrustedFilter
//     (Folsom–Pike) called, byte-compatible with Intel's OAT server. It is
//     answered from the verdict cache only: no request ever waits on a node,
//     because Nova sets no HTTP timeout and a slow answer blocks its scheduler.
//   - TraitSync keeps a custom trait (CUSTOM_TRUSTED_HOST by default) on the
//     Placement resource provider of exactly the trusted hosts, which is how
//     Nova since Queens selects hosts (flavor trait:CUSTOM_TRUSTED_HOST=required).
//     It applies the trait changes the recorder writes to the store's outbox
//     with each level change, each claimed by one replica, so none is lost
//     while Placement or trustpool is down and none is written twice.
//
// Everything a client sends is hostile input: request bodies are size- and
// count-limited and strictly decoded. Levels are always read fail-closed
// (verdict.Verdict.At): a missing or expired verdict is unknown. OpenStack's
// wire types (gophercloud) stay inside this package.
package nova
