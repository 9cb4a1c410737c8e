package main

// calls counts the SOAP methods the simulator was asked, for bench/vsphere_fanout.py: GET
// /labdeploy/calls answers {"Method": count, ...} as JSON and, with ?reset=1, starts counting again.

import (
	"encoding/json"
	"net/http"
	"sync"
)

type calls struct {
	mu    sync.Mutex
	count map[string]int
}

func newCalls() *calls { return &calls{count: map[string]int{}} }

func (c *calls) add(method string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.count[method]++
}

func (c *calls) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(c.count)
	if r.URL.Query().Get("reset") == "1" {
		c.count = map[string]int{}
	}
}
