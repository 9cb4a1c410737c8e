package main

// govmomi's simulator at v0.18.0 removes a destroyed HostSystem from the inventory but leaves its
// reference in its cluster's host list (HostSystem.DestroyTask assumes a standalone host), so the
// cluster then names an object that no longer exists. vCenter takes a host that leaves a cluster out
// of that list; destroyedHost does the same once the simulator's Destroy_Task of a clustered host
// succeeded.

import (
	"bytes"
	"net/http"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func destroyedHost(w http.ResponseWriter, r *http.Request, body []byte, next http.Handler) {
	ref := types.ManagedObjectReference{Type: "HostSystem", Value: thisValue(body)}
	var cluster *simulator.ClusterComputeResource
	if host, ok := simulator.Map.Get(ref).(*simulator.HostSystem); ok && host.Parent != nil {
		cluster, _ = simulator.Map.Get(*host.Parent).(*simulator.ClusterComputeResource)
	}
	rec := ask(r, body, next)
	if cluster != nil && !bytes.Contains(rec.Body.Bytes(), []byte("<soapenv:Fault>")) {
		simulator.Map.WithLock(cluster, func() { cluster.Host = without(cluster.Host, ref) })
	}
	relay(w, rec)
}

func without(refs []types.ManagedObjectReference, gone types.ManagedObjectReference) []types.ManagedObjectReference {
	kept := refs[:0:0]
	for _, ref := range refs {
		if ref != gone {
			kept = append(kept, ref)
		}
	}
	return kept
}
