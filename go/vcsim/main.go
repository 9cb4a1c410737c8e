// Command vcsim serves govmomi's vCenter simulator for labdeploy's vSphere tests.
//
// It differs from upstream's vcsim command in what the tests need: it listens on a free loopback
// port over TLS with the certificate and key it is given (the tests sign them with a CA of their
// own), it can delay chosen SOAP methods (-method-delay CloneVM_Task=200ms,PowerOnVM_Task=50ms) so
// waits and concurrency caps can be measured, it can play VMware Tools in the VMs it powers on
// (-guest-net 192.0.2.0/24, -guest-delay, see guest.go), it answers incremental WaitForUpdatesEx
// calls as vCenter does (wait.go), it can refuse a wrong password (-password, login.go), it takes a destroyed host out of its cluster (hosts.go), it counts the methods it is asked (GET /labdeploy/calls), and it prints one line "VCSIM_URL=<url>" once it
// serves. SIGINT/SIGTERM stop it.
package main

import (
	"bytes"
	"crypto/tls"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	cert := flag.String("tlscert", "", "PEM certificate file (required)")
	key := flag.String("tlskey", "", "PEM key file (required)")
	delays := flag.String("method-delay", "", "comma-separated METHOD=DURATION pairs, e.g. CloneVM_Task=200ms")
	dcs := flag.Int("dc", 1, "number of datacenters")
	vms := flag.Int("vm", 0, "number of VMs per resource pool")
	guestNet := flag.String("guest-net", "", "play VMware Tools: a powered-on VM reports the next address of this IPv4 CIDR")
	password := flag.String("password", "", "refuse Login with any other password (InvalidLogin)")
	guestDelay := flag.Duration("guest-delay", 0, "with -guest-net: how long after power-on tools report the guest")
	flag.Parse()

	delay, err := parseDelays(*delays)
	if err != nil {
		log.Fatal(err)
	}
	tools, err := newGuests(*guestNet, *guestDelay)
	if err != nil {
		log.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		log.Fatalf("loading -tlscert/-tlskey: %v", err)
	}

	model := simulator.VPX()
	model.Datacenter = *dcs
	model.Machine = *vms
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove()

	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	inner := http.NewServeMux()
	model.Service.ServeMux = inner
	server := model.Service.NewServer()
	// NewServer starts serving at once; no client knows the address before the line below.
	counted := newCalls()
	outer := http.NewServeMux()
	outer.Handle("/labdeploy/calls", counted)
	outer.Handle("/", delayed(inner, delay, tools, newWaits(), counted, *password))
	server.Config.Handler = outer
	defer server.Close()

	server.URL.User = nil
	fmt.Printf("VCSIM_URL=%s\n", server.URL)
	_ = os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}

func parseDelays(spec string) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	for _, item := range strings.Split(spec, ",") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		name, value, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("-method-delay: %q is not METHOD=DURATION", item)
		}
		d, err := time.ParseDuration(value)
		if err != nil {
			return nil, fmt.Errorf("-method-delay: %q: %v", item, err)
		}
		out[strings.TrimSpace(name)] = d
	}
	return out, nil
}

func readCloser(s string) io.ReadCloser { return io.NopCloser(strings.NewReader(s)) }

// delayed holds a SOAP request for the delay of its method before the simulator handles it
// (and lets tools report the guest of a power task).
func delayed(next http.Handler, delay map[string]time.Duration, tools *guests, wt *waits, counted *calls,
	password string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.Body != nil {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			method := soapMethod(body)
			counted.add(method)
			if d, ok := delay[method]; ok {
				time.Sleep(d)
			}
			if method == "Fetch" {
				fetched(w, r, body, next)
				return
			}
			if method == "Login" && refusedLogin(w, body, password) {
				return
			}
			if method == "Destroy_Task" && bytes.Contains(body, []byte(`type="HostSystem"`)) {
				destroyedHost(w, r, body, next)
				return
			}
			if method == "WaitForUpdatesEx" {
				wt.serve(w, r, body, next)
				return
			}
			if tools != nil && (method == "PowerOnVM_Task" || method == "PowerOffVM_Task") {
				tools.serve(w, r, body, method, next)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// soapMethod is the local name of the first element inside the envelope's Body.
func soapMethod(body []byte) string {
	dec := xml.NewDecoder(bytes.NewReader(body))
	inBody := false
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		start, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if inBody {
			return start.Name.Local
		}
		inBody = start.Name.Local == "Body"
	}
}
