package main

// With -guest-net CIDR the simulator plays VMware Tools inside each VM it powers on: -guest-delay
// after PowerOnVM_Task has run (before its answer leaves when the delay is 0), the VM reports tools
// running, a host name (its VM name) and the next address of CIDR on its first NIC (guest.ipAddress,
// guest.net, summary.guest); PowerOffVM_Task takes that report away again. govmomi's simulator at v0.18.0
// runs no guest and leaves guest.ipAddress empty, so a provider's wait for a guest IP could not be
// exercised without it. Use a documentation range (192.0.2.0/24): nothing is ever sent there.

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

type guests struct {
	mu     sync.Mutex
	delay  time.Duration
	prefix netip.Prefix
	next   netip.Addr
	given  map[string]string // VM moref value -> address
}

func newGuests(cidr string, delay time.Duration) (*guests, error) {
	if cidr == "" {
		return nil, nil
	}
	prefix, err := netip.ParsePrefix(cidr)
	if err != nil || !prefix.Addr().Is4() {
		return nil, fmt.Errorf("-guest-net: %q is not an IPv4 CIDR", cidr)
	}
	prefix = prefix.Masked()
	return &guests{delay: delay, prefix: prefix, next: prefix.Addr().Next(), given: map[string]string{}}, nil
}

// address is the VM's address: the one it had, else the next free one of the range.
func (g *guests) address(vm string) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ip, ok := g.given[vm]; ok {
		return ip, nil
	}
	if !g.prefix.Contains(g.next) {
		return "", fmt.Errorf("-guest-net %s has no address left", g.prefix)
	}
	ip := g.next.String()
	g.given[vm] = ip
	g.next = g.next.Next()
	return ip, nil
}

// serve runs a power task through the simulator, then reports (or clears) the guest before answering.
func (g *guests) serve(w http.ResponseWriter, r *http.Request, body []byte, method string, next http.Handler) {
	rec := ask(r, body, next)
	on, vm := method == "PowerOnVM_Task", thisValue(body)
	if !bytes.Contains(rec.Body.Bytes(), []byte("<soapenv:Fault>")) {
		if on && g.delay > 0 {
			time.AfterFunc(g.delay, func() { _ = g.report(vm, true) })
		} else if err := g.report(vm, on); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	relay(w, rec)
}

func (g *guests) report(moref string, on bool) error {
	obj := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: moref})
	vm, ok := obj.(*simulator.VirtualMachine)
	if !ok {
		return nil // not a VM the simulator knows: its own fault has already answered
	}
	if on && vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		return nil // powered off again before tools came up
	}
	ip := ""
	if on {
		var err error
		if ip, err = g.address(moref); err != nil {
			return err
		}
	}
	simulator.Map.WithLock(vm, func() { setGuest(vm, ip) })
	return nil
}

// setGuest writes what VMware Tools reports: running with ip, or (ip "") not running.
func setGuest(vm *simulator.VirtualMachine, ip string) {
	if vm.Guest == nil {
		vm.Guest = &types.GuestInfo{}
	}
	if vm.Summary.Guest == nil {
		vm.Summary.Guest = &types.VirtualMachineGuestSummary{}
	}
	running, status, state, host := "guestToolsNotRunning", types.VirtualMachineToolsStatusToolsNotRunning, "notRunning", ""
	var nics []types.GuestNicInfo
	if ip != "" {
		running, status, state, host = "guestToolsRunning", types.VirtualMachineToolsStatusToolsOk, "running", vm.Name
		nics = guestNics(vm, ip)
	}
	vm.Guest.ToolsRunningStatus, vm.Guest.ToolsStatus, vm.Guest.GuestState = running, status, state
	vm.Guest.HostName, vm.Guest.IpAddress, vm.Guest.Net = host, ip, nics
	vm.Summary.Guest.ToolsRunningStatus, vm.Summary.Guest.ToolsStatus = running, status
	vm.Summary.Guest.HostName, vm.Summary.Guest.IpAddress = host, ip
}

// guestNics lists the VM's NICs with the port group each is on; the first one holds ip.
func guestNics(vm *simulator.VirtualMachine, ip string) []types.GuestNicInfo {
	var nics []types.GuestNicInfo
	for _, device := range vm.Config.Hardware.Device {
		card, ok := device.(types.BaseVirtualEthernetCard)
		if !ok {
			continue
		}
		eth := card.GetVirtualEthernetCard()
		nic := types.GuestNicInfo{MacAddress: eth.MacAddress, Connected: true, DeviceConfigId: eth.Key}
		if backing, ok := eth.Backing.(*types.VirtualEthernetCardNetworkBackingInfo); ok {
			nic.Network = backing.DeviceName
		}
		if len(nics) == 0 {
			nic.IpAddress = []string{ip}
		}
		nics = append(nics, nic)
	}
	return nics
}

// thisValue is the moref value of the request's _this (the object the method is called on).
func thisValue(body []byte) string {
	dec := xml.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		if start, ok := tok.(xml.StartElement); ok && start.Name.Local == "_this" {
			var value string
			if dec.DecodeElement(&value, &start) != nil {
				return ""
			}
			return value
		}
	}
}
