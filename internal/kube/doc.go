// Package kube gives Kubernetes the trusted pools: a node controller that
// keeps every Node's taints, label, annotations and condition equal to its
// trustpool host's verdict, and a scheduler extender (filter and
// prioritize) answered from the verdict cache.
//
// What the controller writes, for a Node mapped to a host (Mapping):
//
//   - the taint trustpool.io/untrusted:NoSchedule on every Node without a
//     current trusted verdict — untrusted, expired, never attested, a Node
//     that names no host or shares its host with another Node — and, with
//     eviction on, trustpool.io/untrusted:NoExecute once the Node has been
//     without trust for the grace period;
//   - the label node-restriction.kubernetes.io/trustpool-trusted=true on
//     trusted Nodes only (kubelets cannot write that prefix, so a workload's
//     nodeSelector on it cannot be satisfied by a node's own word);
//   - annotations trustpool.io/{host,level,policy,vtime,expiry,untrusted-since};
//   - the condition TrustpoolTrusted, for dashboards only: a kubelet may
//     write its own Node's conditions, so nothing may gate on it.
//
// Taints with other keys are never touched, and every write is a strategic
// merge patch carrying the resourceVersion it was computed from, retried on
// conflict, so a concurrent writer's taints are not lost. Only the holder
// of a Lease writes; every replica reads (the informer and the extender).
//
// Everything kube-scheduler sends the extender is hostile input: the body
// is size-limited and decoded strictly, and the caller must present a
// client certificate from the configured CA naming an allowed user (or a
// scheduler token). Kubernetes' types stay inside this package.
package kube
