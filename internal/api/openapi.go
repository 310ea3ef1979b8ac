package api

import (
	_ "embed"
	"net/http"
)

// openAPI is the hand-written OpenAPI 3.1 document of every route the
// server mounts (internal/server's TestOpenAPICoversRoutes keeps the two
// equal).
//
//go:embed openapi.yaml
var openAPI []byte

// OpenAPI returns the OpenAPI document (YAML).
func OpenAPI() []byte { return append([]byte(nil), openAPI...) }

// OpenAPIPath is where the API serves its OpenAPI document, to anyone.
const OpenAPIPath = "/v1/openapi.yaml"

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(openAPI)
}
