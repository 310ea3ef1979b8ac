package kube

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"trustpool/internal/httpjson"
	"trustpool/internal/problem"
	"trustpool/internal/verdict"
)

// The extender's routes, relative to the server: kube-scheduler calls
// urlPrefix + "/" + verb, so its urlPrefix is https://SERVER/v1/kubernetes.
const (
	FilterPath     = "/v1/kubernetes/filter"
	PrioritizePath = "/v1/kubernetes/prioritize"
)

// Limits on one extender request. With nodeCacheCapable: false
// kube-scheduler sends every candidate Node whole (a few KB each, more with
// many images), so the body limit is generous; nodeCacheCapable: true sends
// names only. Both bound what one request can make the server hold.
const (
	MaxExtenderBody  = 64 << 20
	MaxExtenderNodes = 100_000
)

// NodeHosts maps a Node, known by name only, to its host: the
// controller's informer cache (Controller.NodeHost). ok is false, with why,
// when the Node is unknown, names no host, or shares its host.
type NodeHosts interface {
	NodeHost(name string) (host, why string, ok bool)
}

// ExtenderConfig configures an Extender.
type ExtenderConfig struct {
	Verdicts Verdicts // required
	// Now is the clock levels are read at; default time.Now.
	Now     func() time.Time
	Mapping Mapping
	// Nodes maps names to hosts for requests that carry names only
	// (nodeCacheCapable: true) when the Mapping is by label or annotation;
	// without it such requests pass no node. With the default mapping
	// (the node's name) it is not needed.
	Nodes NodeHosts
	Log   *slog.Logger
}

// Extender answers kube-scheduler's extender calls from the verdict cache:
// filter passes exactly the trusted nodes, prioritize scores trusted nodes
// highest. It never calls a node or the store. It is safe for concurrent
// use.
type Extender struct {
	cfg ExtenderConfig
}

// NewExtender returns an Extender.
func NewExtender(cfg ExtenderConfig) (*Extender, error) {
	if cfg.Verdicts == nil {
		return nil, fmt.Errorf("kubernetes extender: the verdict cache is required")
	}
	if err := cfg.Mapping.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Extender{cfg: cfg}, nil
}

// candidate is one node of a request, with its verdict decided.
type candidate struct {
	name    string
	node    *corev1.Node // nil in the names-only form
	trusted bool
	why     string // why not, for the scheduler's message
}

// decide reads args and decides every candidate node.
func (e *Extender) decide(args *extenderv1.ExtenderArgs) ([]candidate, error) {
	var cands []candidate
	switch {
	case args.Nodes != nil && args.NodeNames != nil:
		return nil, problem.New(problem.Invalid, "give Nodes or NodeNames, not both")
	case args.Nodes != nil:
		if len(args.Nodes.Items) > MaxExtenderNodes {
			return nil, problem.New(problem.TooLarge, "more than %d nodes", MaxExtenderNodes)
		}
		// A host named by two candidates vouches for neither.
		count := map[string]int{}
		for i := range args.Nodes.Items {
			if h, ok := e.cfg.Mapping.Host(&args.Nodes.Items[i]); ok {
				count[h]++
			}
		}
		for i := range args.Nodes.Items {
			n := &args.Nodes.Items[i]
			c := candidate{name: n.Name, node: n}
			h, ok := e.cfg.Mapping.Host(n)
			switch {
			case !ok:
				c.why = "trustpool: the node names no trustpool host (by its " + e.cfg.Mapping.source() + ")"
			case count[h] > 1:
				c.why = "trustpool: another node also names trustpool host " + h
			default:
				c.trusted, c.why = e.judge(h)
			}
			cands = append(cands, c)
		}
	case args.NodeNames != nil:
		if len(*args.NodeNames) > MaxExtenderNodes {
			return nil, problem.New(problem.TooLarge, "more than %d node names", MaxExtenderNodes)
		}
		for _, name := range *args.NodeNames {
			c := candidate{name: name}
			switch {
			case e.cfg.Mapping.Label == "" && e.cfg.Mapping.Annotation == "":
				h, _ := Mapping{}.Host(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}})
				c.trusted, c.why = e.judge(h)
			case e.cfg.Nodes == nil:
				c.why = "trustpool: hosts are mapped by " + e.cfg.Mapping.source() + ": configure the extender with nodeCacheCapable: false or run the node controller"
			default:
				if h, why, ok := e.cfg.Nodes.NodeHost(name); ok {
					c.trusted, c.why = e.judge(h)
				} else {
					c.why = "trustpool: " + why
				}
			}
			cands = append(cands, c)
		}
	default:
		return nil, problem.New(problem.Invalid, "no Nodes and no NodeNames")
	}
	return cands, nil
}

// judge reads host's verdict now, fail closed.
func (e *Extender) judge(host string) (bool, string) {
	v, ok := e.cfg.Verdicts.Verdict(host)
	if !ok {
		return false, "trustpool: host " + host + " has no verdict"
	}
	if l := v.At(e.cfg.Now()); l != verdict.Trusted {
		return false, "trustpool: host " + host + " is " + string(l)
	}
	return true, ""
}

// Filter is the handler of FilterPath: an ExtenderFilterResult in the
// form the request used (Nodes or NodeNames) with the trusted candidates;
// the others are in FailedAndUnresolvableNodes (preempting pods cannot
// make a node trusted). A request the extender cannot read is a 4xx; the
// scheduler then treats the extender as failed, and with ignorable: false
// the pod stays pending — fail closed.
func (e *Extender) Filter() http.Handler {
	return e.handle(func(args *extenderv1.ExtenderArgs, cands []candidate) any {
		res := extenderv1.ExtenderFilterResult{FailedAndUnresolvableNodes: extenderv1.FailedNodesMap{}}
		if args.Nodes != nil {
			res.Nodes = &corev1.NodeList{Items: []corev1.Node{}}
		} else {
			names := []string{}
			res.NodeNames = &names
		}
		for _, c := range cands {
			switch {
			case !c.trusted:
				res.FailedAndUnresolvableNodes[c.name] = c.why
			case c.node != nil:
				res.Nodes.Items = append(res.Nodes.Items, *c.node)
			default:
				*res.NodeNames = append(*res.NodeNames, c.name)
			}
		}
		return res
	})
}

// Prioritize is the handler of PrioritizePath: trusted candidates score
// extenderv1.MaxExtenderPriority, the others the minimum.
func (e *Extender) Prioritize() http.Handler {
	return e.handle(func(_ *extenderv1.ExtenderArgs, cands []candidate) any {
		out := make(extenderv1.HostPriorityList, 0, len(cands))
		for _, c := range cands {
			score := extenderv1.MinExtenderPriority
			if c.trusted {
				score = extenderv1.MaxExtenderPriority
			}
			out = append(out, extenderv1.HostPriority{Host: c.name, Score: score})
		}
		return out
	})
}

// handle decodes a request strictly, decides its candidates and writes
// what answer makes of them.
func (e *Extender) handle(answer func(*extenderv1.ExtenderArgs, []candidate) any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var args extenderv1.ExtenderArgs
		if err := httpjson.Decode(w, r, MaxExtenderBody, &args); err != nil {
			httpjson.Error(w, r, e.cfg.Log, err)
			return
		}
		cands, err := e.decide(&args)
		if err != nil {
			httpjson.Error(w, r, e.cfg.Log, err)
			return
		}
		httpjson.JSON(w, http.StatusOK, answer(&args, cands))
	})
}

// ClientCerts admits callers by their TLS client certificate: one that
// chains to Roots for client authentication, now, and whose subject common
// name is one of Names (Kubernetes' user name convention; kube-scheduler's
// own is system:kube-scheduler). kube-scheduler's extender client can
// present a certificate but no bearer token.
//
// What is trusted: the CA bundle the operator configured and the names it
// allows. The TLS handshake has checked that the peer holds the
// certificate's key; the chain is checked here again against Roots alone,
// so trusting another CA on the listener (trustpool's own, for agents)
// admits nobody here.
type ClientCerts struct {
	Roots *x509.CertPool
	Names []string
	Now   func() time.Time // default time.Now
}

// Admits reports whether r comes with an admitted certificate.
func (c *ClientCerts) Admits(r *http.Request) bool {
	if c == nil || c.Roots == nil || r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return false
	}
	leaf := r.TLS.PeerCertificates[0]
	if !slices.Contains(c.Names, leaf.Subject.CommonName) {
		return false
	}
	inter := x509.NewCertPool()
	for _, ic := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: c.Roots, Intermediates: inter, CurrentTime: now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err == nil
}

// Or returns middleware: a request with an admitted certificate goes
// straight to the handler, any other through otherwise (the server's
// bearer-token check for the scheduler role).
func (c *ClientCerts) Or(otherwise func(http.Handler) http.Handler) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		fallback := otherwise(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c.Admits(r) {
				next.ServeHTTP(w, r)
				return
			}
			fallback.ServeHTTP(w, r)
		})
	}
}
