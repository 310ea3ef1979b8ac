// Package crashtest checks that the attestation server survives being killed.
// Its test builds the trustpool binary, runs a server and simulated trust
// agents as separate processes, kills the server with SIGKILL in the middle
// of an enrollment and attestation storm, restarts it on the same state
// directory, and checks that nothing the server acknowledged (a 2xx answer)
// before the kill was lost: enrolled hosts, references, policies, audit
// entries and verdicts. It also checks that every stored verdict agrees with
// the stored evidence it claims to judge, by evaluating that evidence again
// against the policy and reference versions the verdict names.
//
// The package has no code outside its test.
package crashtest
