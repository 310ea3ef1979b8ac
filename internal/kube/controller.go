package kube

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/workqueue"

	"trustpool/internal/verdict"
)

// Defaults for Config.
const (
	DefaultEvictAfter     = 5 * time.Minute
	DefaultReconcile      = 5 * time.Minute
	DefaultSweep          = time.Second
	DefaultLeaseNamespace = "trustpool"
	DefaultLeaseName      = "trustpool-node-controller"
	DefaultLeaseDuration  = 15 * time.Second
	DefaultRenewDeadline  = 10 * time.Second
	DefaultRetryPeriod    = 2 * time.Second
	defaultWorkers        = 4
	// FieldManager names the controller's writes in managedFields.
	FieldManager = "trustpool"
)

// maxConflictAttempts bounds the read-patch loop of one node when the API
// server keeps answering 409 (another writer changed the node meanwhile).
const maxConflictAttempts = 5

// hostIndex indexes Nodes by the trustpool host they name.
const hostIndex = "trustpool-host"

// Config configures a Controller.
type Config struct {
	// Client talks to the API server (required).
	Client kubernetes.Interface
	// Verdicts is the verdict cache (required).
	Verdicts Verdicts
	// Now is the clock levels are read at; default time.Now.
	Now     func() time.Time
	Mapping Mapping
	Rules   Rules // EvictAfter defaults to DefaultEvictAfter
	// Reconcile is how often every Node is looked at again (drift that no
	// event reported); Sweep how often the levels of every Node's host
	// are compared with what was last written — it catches what Changed
	// was not told (another replica's verdicts, which this one follows).
	Reconcile, Sweep time.Duration
	// The Lease that elects the one writer: namespace, name, and this
	// replica's identity in it (default host name and a random suffix).
	LeaseNamespace, LeaseName, Identity string
	// Lease timings (defaults 15 s, 10 s, 2 s, as Kubernetes' own
	// components): a writer stops at RenewDeadline without a renewal, a
	// candidate takes over LeaseDuration after the last one it saw.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Workers is how many nodes are written at once (default 4).
	Workers int
	Log     *slog.Logger
	// APIError, when set, is told of every failed API write or read by
	// operation (patch_node, patch_node_status, get_node).
	APIError func(op string)
	// TaintChanged, when set, is told of every taint of ours added or
	// removed, by effect (NoSchedule, NoExecute).
	TaintChanged func(effect string, added bool)
	// Leading, when set, is told when this replica starts and stops
	// writing.
	Leading func(bool)
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("kubernetes: a client is required"))
	}
	if c.Verdicts == nil {
		errs = append(errs, errors.New("kubernetes: the verdict cache is required"))
	}
	if err := c.Mapping.Validate(); err != nil {
		errs = append(errs, err)
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"evict-after", c.Rules.EvictAfter}, {"reconcile", c.Reconcile}, {"sweep", c.Sweep},
		{"lease duration", c.LeaseDuration}, {"renew deadline", c.RenewDeadline}, {"retry period", c.RetryPeriod}} {
		if d.d < 0 {
			errs = append(errs, fmt.Errorf("kubernetes: %s %v must not be negative", d.name, d.d))
		}
	}
	if c.LeaseNamespace != "" {
		if msgs := validation.IsDNS1123Label(c.LeaseNamespace); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("kubernetes: lease namespace %q: %s", c.LeaseNamespace, strings.Join(msgs, "; ")))
		}
	}
	if c.LeaseName != "" {
		if msgs := validation.IsDNS1123Subdomain(c.LeaseName); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("kubernetes: lease name %q: %s", c.LeaseName, strings.Join(msgs, "; ")))
		}
	}
	return errors.Join(errs...)
}

// Controller keeps Nodes' taints, label, annotations and condition equal
// to their hosts' verdicts (see the package comment). Every replica runs
// one: all watch the Nodes, the Lease holder alone writes.
type Controller struct {
	cfg      Config // defaults applied
	log      *slog.Logger
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	lister   corelisters.NodeLister

	mu    sync.Mutex                                   // guards queue and term
	queue workqueue.TypedRateLimitingInterface[string] // nil unless this replica writes
	term  *term                                        // the writing term in progress, if any

	smu    sync.Mutex             // guards synced and conds
	synced map[string]syncedAs    // node → what was last written for it
	conds  map[string]writtenCond // node → the condition last written, while the informer may not show it yet
}

// writtenCond is a condition the controller wrote, and when.
type writtenCond struct {
	status          corev1.ConditionStatus
	reason, message string
	at              time.Time
}

// condSettle is how long a condition just written is taken as written
// though the informer's copy of the Node does not show it yet: the Node's
// own patch wakes a sync before the status patch reaches the informer,
// and writing the same condition again would be a wasted write. (The
// condition is for dashboards only; the reconcile repairs it if another
// writer changed it meanwhile.)
const condSettle = 5 * time.Second

// syncedAs is what decided a node's last write; the sweep writes again
// when it differs.
type syncedAs struct {
	host    string
	level   verdict.Level
	policy  string
	trusted bool
}

// term is one period of writing under the Lease.
type term struct {
	stop context.CancelFunc
	done chan struct{}
}

// New checks cfg and prepares the controller; Run starts it.
func New(cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rules.EvictAfter == 0 {
		cfg.Rules.EvictAfter = DefaultEvictAfter
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.Reconcile, DefaultReconcile)
	def(&cfg.Sweep, DefaultSweep)
	def(&cfg.LeaseDuration, DefaultLeaseDuration)
	def(&cfg.RenewDeadline, DefaultRenewDeadline)
	def(&cfg.RetryPeriod, DefaultRetryPeriod)
	if cfg.LeaseNamespace == "" {
		cfg.LeaseNamespace = DefaultLeaseNamespace
	}
	if cfg.LeaseName == "" {
		cfg.LeaseName = DefaultLeaseName
	}
	if cfg.Identity == "" {
		hn, _ := os.Hostname()
		b := make([]byte, 6)
		rand.Read(b)
		cfg.Identity = hn + "_" + base64.RawURLEncoding.EncodeToString(b)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = defaultWorkers
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	c := &Controller{cfg: cfg, log: cfg.Log, synced: map[string]syncedAs{}, conds: map[string]writtenCond{}}
	// No informer resync: Reconcile does that, through the queue.
	c.factory = informers.NewSharedInformerFactory(cfg.Client, 0)
	nodes := c.factory.Core().V1().Nodes()
	c.informer, c.lister = nodes.Informer(), nodes.Lister()
	err := c.informer.AddIndexers(cache.Indexers{hostIndex: func(obj any) ([]string, error) {
		n, ok := obj.(*corev1.Node)
		if !ok {
			return nil, nil
		}
		if h, ok := cfg.Mapping.Host(n); ok {
			return []string{h}, nil
		}
		return nil, nil
	}})
	if err != nil {
		return nil, fmt.Errorf("kubernetes: node index: %w", err)
	}
	_, err = c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.nodeEvent(nil, obj) },
		UpdateFunc: func(old, obj any) {
			if relevant(old, obj) {
				c.nodeEvent(old, obj)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if n, ok := obj.(*corev1.Node); ok {
				c.smu.Lock()
				delete(c.synced, n.Name)
				delete(c.conds, n.Name)
				c.smu.Unlock()
			}
			c.nodeEvent(obj, nil)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("kubernetes: node events: %w", err)
	}
	return c, nil
}

// relevant reports whether a Node update touched what the controller
// reads or writes (not a kubelet's status heartbeat).
func relevant(old, obj any) bool {
	a, ok1 := old.(*corev1.Node)
	b, ok2 := obj.(*corev1.Node)
	if !ok1 || !ok2 {
		return true
	}
	if !sameObject(a, b) {
		return true
	}
	ca, cb := condition(a), condition(b)
	return (ca == nil) != (cb == nil) || ca != nil && (ca.Status != cb.Status || ca.Reason != cb.Reason || ca.Message != cb.Message)
}

func condition(n *corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == ConditionType {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// nodeEvent queues a Node that was added, changed or deleted, and every
// other Node naming its old or new host (their sharing may have changed).
func (c *Controller) nodeEvent(old, obj any) {
	q := c.writing()
	if q == nil {
		return
	}
	for _, o := range []any{old, obj} {
		n, ok := o.(*corev1.Node)
		if !ok {
			continue
		}
		if o == obj {
			q.Add(n.Name)
		}
		if h, ok := c.cfg.Mapping.Host(n); ok {
			c.queueHost(q, h)
		}
	}
}

// Changed tells the controller that host's level may have changed (the
// recorder's OnChange). It never blocks; the host's Nodes are written at
// once by the replica holding the Lease, and ignored by the others.
func (c *Controller) Changed(host string) {
	if q := c.writing(); q != nil {
		c.queueHost(q, strings.ToLower(host))
	}
}

func (c *Controller) queueHost(q workqueue.TypedRateLimitingInterface[string], host string) {
	objs, _ := c.informer.GetIndexer().ByIndex(hostIndex, host)
	for _, o := range objs {
		if n, ok := o.(*corev1.Node); ok {
			q.Add(n.Name)
		}
	}
}

func (c *Controller) writing() workqueue.TypedRateLimitingInterface[string] {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queue
}

// Synced reports whether the Node informer has listed every Node.
func (c *Controller) Synced() bool { return c.informer.HasSynced() }

// Run watches the Nodes and takes part in the Lease election until ctx
// ends: while it holds the Lease it writes, and when it loses the Lease it
// stops writing and stands again. It returns nil when ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced) {
		return nil
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: c.cfg.LeaseNamespace, Name: c.cfg.LeaseName},
		Client:     c.cfg.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: c.cfg.Identity},
	}
	// The elector gets its own context: when ctx ends, the writers stop
	// first and the Lease is released after them, so that no successor
	// writes while a write of ours is in flight.
	ectx, ecancel := context.WithCancel(context.WithoutCancel(ctx))
	defer ecancel()
	defer context.AfterFunc(ctx, func() {
		c.endTerm()
		ecancel()
	})()
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			Name:            c.cfg.LeaseName,
			LeaseDuration:   c.cfg.LeaseDuration,
			RenewDeadline:   c.cfg.RenewDeadline,
			RetryPeriod:     c.cfg.RetryPeriod,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) { c.lead(ctx, lctx) },
				OnStoppedLeading: func() {},
				OnNewLeader: func(id string) {
					c.log.Info("kubernetes node controller leader", "identity", id, "self", id == c.cfg.Identity)
				},
			},
		})
		if err != nil {
			return fmt.Errorf("kubernetes: leader election: %w", err)
		}
		le.Run(ectx)
		c.endTerm() // a lost Lease: wait for the writers before standing again
	}
	return nil
}

// endTerm stops the writing term, if one is running, and waits for it.
func (c *Controller) endTerm() {
	c.mu.Lock()
	t := c.term
	c.mu.Unlock()
	if t != nil {
		t.stop()
		<-t.done
	}
}

// lead writes while lctx (the Lease) lasts and ctx (the controller) runs:
// every Node at once, then what changes, the sweep and the reconcile.
func (c *Controller) lead(ctx, lctx context.Context) {
	wctx, stop := context.WithCancel(lctx)
	defer stop()
	t := &term{stop: stop, done: make(chan struct{})}
	defer close(t.done)
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, time.Minute),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: ""})
	c.mu.Lock()
	if ctx.Err() != nil { // stopping: Run's AfterFunc may have missed this term
		c.mu.Unlock()
		return
	}
	c.queue, c.term = q, t
	c.mu.Unlock()
	c.log.Info("kubernetes node controller writing", "identity", c.cfg.Identity)
	if c.cfg.Leading != nil {
		c.cfg.Leading(true)
	}
	var wg sync.WaitGroup
	defer func() {
		c.mu.Lock()
		c.queue, c.term = nil, nil
		c.mu.Unlock()
		q.ShutDown()
		wg.Wait()
		c.smu.Lock()
		clear(c.synced) // the next term starts from what the Nodes say
		clear(c.conds)
		c.smu.Unlock()
		if c.cfg.Leading != nil {
			c.cfg.Leading(false)
		}
		c.log.Info("kubernetes node controller stopped writing", "identity", c.cfg.Identity)
	}()
	for range c.cfg.Workers {
		wg.Go(func() { c.work(wctx, q) })
	}
	c.queueAll(q)
	reconcile := time.NewTicker(c.cfg.Reconcile)
	defer reconcile.Stop()
	sweep := time.NewTicker(c.cfg.Sweep)
	defer sweep.Stop()
	for {
		select {
		case <-wctx.Done():
			return
		case <-reconcile.C:
			c.queueAll(q)
		case <-sweep.C:
			c.sweep(q)
		}
	}
}

func (c *Controller) queueAll(q workqueue.TypedRateLimitingInterface[string]) {
	for _, k := range c.informer.GetIndexer().ListKeys() {
		q.Add(k) // Nodes are cluster-scoped: the key is the name
	}
}

// sweep queues every Node whose host's standing differs from what was
// last written for it, except those whose writes are failing: they wait
// for their backoff, so that a refusing API server is not asked again
// every second for every Node.
func (c *Controller) sweep(q workqueue.TypedRateLimitingInterface[string]) {
	now := c.cfg.Now()
	for _, o := range c.informer.GetIndexer().List() {
		n, ok := o.(*corev1.Node)
		if !ok || q.NumRequeues(n.Name) > 0 {
			continue
		}
		as := c.syncedAs(c.standing(n), now)
		c.smu.Lock()
		last, ok := c.synced[n.Name]
		c.smu.Unlock()
		if !ok || last != as {
			q.Add(n.Name)
		}
	}
}

func (c *Controller) syncedAs(s standing, now time.Time) syncedAs {
	as := syncedAs{host: s.host, level: s.level(now), trusted: s.trusted(now)}
	if s.found {
		as.policy = s.verdict.Policy
	}
	return as
}

func (c *Controller) work(ctx context.Context, q workqueue.TypedRateLimitingInterface[string]) {
	for {
		name, quit := q.Get()
		if quit {
			return
		}
		recheck, err := c.sync(ctx, name)
		switch {
		case err == nil:
			q.Forget(name)
			if recheck > 0 {
				q.AddAfter(name, recheck)
			}
		case ctx.Err() == nil:
			c.log.Error("kubernetes node sync failed", "node", name, "err", err)
			q.AddRateLimited(name)
		}
		q.Done(name)
	}
}

// standing is what the controller knows of n's host.
func (c *Controller) standing(n *corev1.Node) standing {
	s := standing{source: c.cfg.Mapping.source()}
	s.host, s.mapped = c.cfg.Mapping.Host(n)
	if !s.mapped {
		return s
	}
	if objs, _ := c.informer.GetIndexer().ByIndex(hostIndex, s.host); len(objs) > 1 {
		s.shared = true
	}
	s.verdict, s.found = c.cfg.Verdicts.Verdict(s.host)
	return s
}

// sync writes one Node: its labels, annotations and taints in one patch
// guarded by the resourceVersion they were computed from (on a conflict
// the Node is read again and the plan made again), then its condition.
// It returns when the Node must be looked at again (a grace period).
func (c *Controller) sync(ctx context.Context, name string) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	node, err := c.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	for attempt := 1; ; attempt++ {
		now := c.cfg.Now()
		s := c.standing(node)
		p := planNode(node, s, c.cfg.Rules, now)
		if !sameObject(node, p.node) {
			written, err := c.patchNode(ctx, node, p.node)
			if apierrors.IsConflict(err) && attempt < maxConflictAttempts {
				if node, err = c.cfg.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err != nil {
					if apierrors.IsNotFound(err) {
						return 0, nil
					}
					c.apiError("get_node")
					return 0, fmt.Errorf("read node %s: %w", name, err)
				}
				continue
			}
			if apierrors.IsNotFound(err) {
				return 0, nil
			}
			if err != nil {
				c.apiError("patch_node")
				return 0, fmt.Errorf("patch node %s: %w", name, err)
			}
			c.countTaints(node.Spec.Taints, p.node.Spec.Taints)
			c.log.Info("kubernetes node updated", "node", name, "host", s.host, "level", s.level(now), "trusted", s.trusted(now),
				"no_schedule", hasOurs(p.node.Spec.Taints, corev1.TaintEffectNoSchedule), "no_execute", hasOurs(p.node.Spec.Taints, corev1.TaintEffectNoExecute))
			node = written
			// The condition is planned again on what the patch returned.
			p.condition, p.condChanged = planCondition(node, s, s.level(now), s.trusted(now), now)
		}
		if p.condChanged && !c.justWrote(name, p.condition, now) {
			if err := c.patchCondition(ctx, name, p.condition); err != nil && !apierrors.IsNotFound(err) {
				c.apiError("patch_node_status")
				return 0, fmt.Errorf("patch status of node %s: %w", name, err)
			}
			c.smu.Lock()
			c.conds[name] = writtenCond{status: p.condition.Status, reason: p.condition.Reason, message: p.condition.Message, at: now}
			c.smu.Unlock()
		}
		c.smu.Lock()
		c.synced[name] = c.syncedAs(s, now)
		c.smu.Unlock()
		return p.recheck, nil
	}
}

// justWrote reports whether cond is what was written for the node less
// than condSettle ago.
func (c *Controller) justWrote(name string, cond corev1.NodeCondition, now time.Time) bool {
	c.smu.Lock()
	w, ok := c.conds[name]
	c.smu.Unlock()
	return ok && w.status == cond.Status && w.reason == cond.Reason && w.message == cond.Message && now.Sub(w.at) < condSettle
}

// patchNode sends the strategic merge patch from node to want, with
// node's resourceVersion in it: the API server refuses it (409) when the
// Node changed since, so nobody's concurrent change is overwritten.
func (c *Controller) patchNode(ctx context.Context, node, want *corev1.Node) (*corev1.Node, error) {
	from := node.DeepCopy()
	from.ResourceVersion = ""
	to := want.DeepCopy()
	to.ResourceVersion = node.ResourceVersion
	a, err := json.Marshal(from)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(to)
	if err != nil {
		return nil, err
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(a, b, corev1.Node{})
	if err != nil {
		return nil, fmt.Errorf("make patch: %w", err)
	}
	return c.cfg.Client.CoreV1().Nodes().Patch(ctx, node.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager})
}

// patchCondition merges our condition into the Node's status (conditions
// merge by type: the kubelet's stay as they are).
func (c *Controller) patchCondition(ctx context.Context, name string, cond corev1.NodeCondition) error {
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		return err
	}
	_, err = c.cfg.Client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}, "status")
	return err
}

func (c *Controller) apiError(op string) {
	if c.cfg.APIError != nil {
		c.cfg.APIError(op)
	}
}

// countTaints reports our taints added and removed between two lists.
func (c *Controller) countTaints(before, after []corev1.Taint) {
	if c.cfg.TaintChanged == nil {
		return
	}
	for _, e := range []corev1.TaintEffect{corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute} {
		if b, a := hasOurs(before, e), hasOurs(after, e); b != a {
			c.cfg.TaintChanged(string(e), a)
		}
	}
}

// hasOurs reports whether taints hold our taint with effect e.
func hasOurs(taints []corev1.Taint, e corev1.TaintEffect) bool {
	for _, t := range taints {
		if ours(t) && t.Effect == e {
			return true
		}
	}
	return false
}

// NodeHost returns the host the Node name maps to, from the informer's
// cache, for the extender: false, with why, when the Node is not known,
// names no host or shares its host with another Node.
func (c *Controller) NodeHost(name string) (host, why string, ok bool) {
	n, err := c.lister.Get(name)
	if err != nil {
		return "", "the node is not known to trustpool yet", false
	}
	s := c.standing(n)
	switch {
	case !s.mapped:
		return "", "the node names no trustpool host (by its " + s.source + ")", false
	case s.shared:
		return s.host, "another node also names trustpool host " + s.host, false
	}
	return s.host, "", true
}
