package main

// govmomi's simulator at v0.18.0 answers WaitForUpdatesEx only without a version (the full state
// of the collector's filters) and faults on any later, incremental call. waits makes the later
// calls behave as vCenter's do: the call blocks until what the filters select differs from what
// this collector was last told, then returns it (as a full update set: an assignment of every
// selected property, which a client reads the same way), or returns no update set once the
// request's maxWaitSeconds have passed. That is what a client's wait for a guest IP or a task
// needs: nothing here polls on the client's side.

import (
	"bytes"
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"time"
)

const (
	waitPoll       = 50 * time.Millisecond
	waitDefaultMax = 60 * time.Second // vCenter blocks without limit; the tests always pass one
)

var versionElement = regexp.MustCompile(`(?s)<version(\s[^>]*)?>.*?</version>`)

type waitRequest struct {
	Version string `xml:"Body>WaitForUpdatesEx>version"`
	MaxWait *int   `xml:"Body>WaitForUpdatesEx>options>maxWaitSeconds"`
}

type waits struct {
	mu   sync.Mutex
	last map[string][]byte // collector moref -> the answer it was last given
}

func newWaits() *waits { return &waits{last: map[string][]byte{}} }

func (wt *waits) remember(collector string, answer []byte) {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	wt.last[collector] = answer
}

func (wt *waits) told(collector string) []byte {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	return wt.last[collector]
}

func (wt *waits) serve(w http.ResponseWriter, r *http.Request, body []byte, next http.Handler) {
	var req waitRequest
	if err := xml.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	collector := thisValue(body)
	full := versionElement.ReplaceAll(body, nil)
	deadline := time.Now().Add(maxWait(req.MaxWait))
	for {
		rec := ask(r, full, next)
		answer := rec.Body.Bytes()
		faulted := bytes.Contains(answer, []byte("<soapenv:Fault>"))
		if faulted || req.Version == "" || !bytes.Equal(answer, wt.told(collector)) {
			if !faulted {
				wt.remember(collector, answer)
			}
			relay(w, rec)
			return
		}
		if !time.Now().Before(deadline) {
			nothingChanged(w)
			return
		}
		time.Sleep(waitPoll)
	}
}

func maxWait(seconds *int) time.Duration {
	if seconds == nil {
		return waitDefaultMax
	}
	return time.Duration(*seconds) * time.Second
}

// ask serves body through the simulator and records the answer.
func ask(r *http.Request, body []byte, next http.Handler) *httptest.ResponseRecorder {
	sub := r.Clone(r.Context())
	sub.Body = readCloser(string(body))
	sub.ContentLength = int64(len(body))
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, sub)
	return rec
}

func relay(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// nothingChanged is vCenter's answer to a wait whose maxWaitSeconds passed: no update set.
func nothingChanged(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>` +
		`<WaitForUpdatesExResponse xmlns="urn:vim25"></WaitForUpdatesExResponse></soapenv:Body></soapenv:Envelope>`))
}
