package evidence

// Push mode's requests, as a push agent sends them to the server's
// /v1/push routes (over mutual TLS with the agent's admitted certificate).
// Every field is untrusted: the server checks the host against the
// certificate and the nonce against the challenges it issued to that host.

// PushHost names the agent's host: the body of POST /v1/push/challenge and
// POST /v1/push/wait.
type PushHost struct {
	Host string `json:"host"`
}

// PushEvidence is the body of POST /v1/push/evidence: the evidence
// answering the challenge with Nonce.
type PushEvidence struct {
	Host     string    `json:"host"`
	Nonce    []byte    `json:"nonce"`
	Evidence *Evidence `json:"evidence"`
}

// PushWaitAnswer says whether the server wants a fresh quote now.
type PushWaitAnswer struct {
	Attest bool `json:"attest"`
}
