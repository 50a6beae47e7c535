// Command dhcpbench measures DHCP servers: DORA exchanges (DISCOVER, OFFER,
// REQUEST, ACK) per second from many clients with distinct MACs. One load
// generator serves for every server measured, so the numbers compare.
// run.sh sets up the network namespaces and runs it against imprint's
// server and dnsmasq; see there.
//
//	dhcpbench serve -iface veth-s -ip 10.77.0.1/16 -pool 10.77.1.0-10.77.255.254 -leases FILE
//	dhcpbench load  -iface veth-c -clients 20000 -concurrency 64 -max-time 60s
//
// Both subcommands run in the current network namespace (`ip netns exec`).
// The generator only ever broadcasts on the interface it is given, which
// run.sh places in a namespace of its own joined by a veth pair to the
// server's; nothing reaches any other network.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imprint-dev/imprint/netboot/dhcp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dhcpbench serve|load [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dhcpbench:", err)
		os.Exit(1)
	}
}

// serve runs imprint's server in full mode until SIGINT/SIGTERM.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	iface := fs.String("iface", "veth-s", "interface to serve on")
	ipnet := fs.String("ip", "10.77.0.1/16", "server address/prefix")
	pool := fs.String("pool", "10.77.1.0-10.77.255.254", "address pool start-end")
	leases := fs.String("leases", "", "lease file")
	verbose := fs.Bool("v", false, "log every lease")
	cpuprof := fs.String("cpuprofile", "", "write a CPU profile here")
	_ = fs.Parse(args)
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	pfx, err := netip.ParsePrefix(*ipnet)
	if err != nil {
		return err
	}
	start, end, ok := strings.Cut(*pool, "-")
	if !ok {
		return fmt.Errorf("-pool wants start-end, got %q", *pool)
	}
	cfg := dhcp.Config{
		Mode:      dhcp.Full,
		Interface: *iface,
		ServerIP:  pfx.Addr().AsSlice(),
		PoolStart: net.ParseIP(start),
		PoolEnd:   net.ParseIP(end),
		Netmask:   net.CIDRMask(pfx.Bits(), 32),
		Router:    pfx.Addr().AsSlice(),
		LeaseTime: 12 * time.Hour, // as dnsmasq's range in run.sh
		LeaseFile: *leases,
		// A netboot server answers every PXE client with boot options;
		// the generator's clients are plain, so this only costs a check.
		Booter: func(dhcp.Client) (dhcp.Boot, bool) { return dhcp.Boot{Filename: "ipxe.efi"}, true },
	}
	// Errors and drops are always shown; per-lease lines only with -v,
	// as dnsmasq runs with --quiet-dhcp.
	cfg.Logf = func(f string, a ...any) {
		if *verbose || !strings.HasPrefix(f, "dhcp: ACK") {
			fmt.Fprintf(os.Stderr, f+"\n", a...)
		}
	}
	s, err := dhcp.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return s.Serve(ctx)
}

// result is what load prints (one JSON line on stdout).
type result struct {
	Clients     int     `json:"clients"`
	Concurrency int     `json:"concurrency"`
	Completed   int64   `json:"completed"`
	Failed      int64   `json:"failed"`
	Retries     int64   `json:"retries"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"dora_per_second"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	TimedOut    bool    `json:"timed_out"`
}

// generator does the DORAs. One raw socket (the interface has no address;
// nclient4's raw conn sends from 0.0.0.0:68 to the broadcast MAC, as
// firmware does) and one reader that hands each answer to the client
// waiting on its transaction ID.
type generator struct {
	conn    net.PacketConn
	mu      sync.Mutex
	waiting map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
	timeout time.Duration
	retries atomic.Int64
}

func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	iface := fs.String("iface", "veth-c", "client interface (unconfigured)")
	clients := fs.Int("clients", 20000, "number of clients (distinct MACs), one DORA each")
	conc := fs.Int("concurrency", 64, "DORAs in flight")
	maxTime := fs.Duration("max-time", 60*time.Second, "stop after this long")
	timeout := fs.Duration("timeout", 500*time.Millisecond, "wait per message before a retransmission")
	tries := fs.Int("tries", 4, "transmissions per message before a client gives up")
	seed := fs.Uint64("seed", 1, "MAC/xid seed; a different seed gives different clients")
	cpuprof := fs.String("cpuprofile", "", "write a CPU profile here")
	_ = fs.Parse(args)
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	conn, err := nclient4.NewRawUDPConn(*iface, dhcpv4.ClientPort)
	if err != nil {
		return fmt.Errorf("raw socket on %s: %w", *iface, err)
	}
	g := &generator{conn: conn, waiting: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}, timeout: *timeout}
	ctx, cancel := context.WithTimeout(context.Background(), *maxTime)
	defer cancel()
	go g.read()

	var next, completed, failed atomic.Int64
	lat := make([][]time.Duration, *conc)
	start := time.Now()
	var lastDone atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < *conc; w++ {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(*clients) {
					return
				}
				t0 := time.Now()
				if err := g.dora(ctx, clientMAC(*seed, i), xidFor(*seed, i), *tries); err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
						fmt.Fprintf(os.Stderr, "client %d: %v\n", i, err)
					}
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
				completed.Add(1)
				lastDone.Store(int64(time.Since(start)))
			}
		})
	}
	wg.Wait()
	conn.Close()

	elapsed := time.Duration(lastDone.Load())
	if ctx.Err() != nil {
		elapsed = time.Since(start)
	}
	all := slices.Concat(lat...)
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	r := result{
		Clients: *clients, Concurrency: *conc,
		Completed: completed.Load(), Failed: failed.Load(), Retries: g.retries.Load(),
		Seconds: elapsed.Seconds(), TimedOut: ctx.Err() != nil,
	}
	if elapsed > 0 {
		r.PerSecond = float64(r.Completed) / elapsed.Seconds()
	}
	if n := len(all); n > 0 {
		r.P50ms = float64(all[n/2]) / 1e6
		r.P99ms = float64(all[n*99/100]) / 1e6
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// clientMAC gives client i a locally administered unicast MAC.
func clientMAC(seed uint64, i int64) net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	binary.BigEndian.PutUint32(m[2:], uint32(i))
	m[0], m[1] = 0x02, byte(seed)
	return m
}

func xidFor(seed uint64, i int64) dhcpv4.TransactionID {
	var x dhcpv4.TransactionID
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	binary.BigEndian.PutUint32(x[:], r.Uint32())
	return x
}

func (g *generator) read() {
	// One MTU: nclient4's raw conn allocates a packet buffer the size of
	// this one on every read, so a 64 KiB buffer costs more than the DHCP.
	buf := make([]byte, 1500)
	for {
		n, _, err := g.conn.ReadFrom(buf)
		if err != nil {
			return // closed at the end of the run
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		g.mu.Lock()
		ch := g.waiting[m.TransactionID]
		g.mu.Unlock()
		if ch != nil {
			select {
			case ch <- m:
			default: // a duplicate answer; the client has one already
			}
		}
	}
}

// exchange sends msg until an answer of type want arrives (or tries run out).
func (g *generator) exchange(ctx context.Context, msg *dhcpv4.DHCPv4, want dhcpv4.MessageType, ch chan *dhcpv4.DHCPv4, tries int) (*dhcpv4.DHCPv4, error) {
	pkt := msg.ToBytes()
	for try := 0; try < tries; try++ {
		if try > 0 {
			g.retries.Add(1)
		}
		if _, err := g.conn.WriteTo(pkt, &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}); err != nil {
			return nil, err
		}
		timer := time.NewTimer(g.timeout)
	wait:
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				return nil, ctx.Err()
			case <-timer.C:
				break wait
			case m := <-ch:
				switch m.MessageType() {
				case want:
					timer.Stop()
					return m, nil
				case dhcpv4.MessageTypeNak:
					timer.Stop()
					return nil, fmt.Errorf("NAK: %s", m.Message())
				}
			}
		}
	}
	return nil, errors.New("no " + want.String())
}

func (g *generator) dora(ctx context.Context, mac net.HardwareAddr, xid dhcpv4.TransactionID, tries int) error {
	ch := make(chan *dhcpv4.DHCPv4, 4)
	g.mu.Lock()
	g.waiting[xid] = ch
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.waiting, xid)
		g.mu.Unlock()
	}()
	base := func(mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
		return &dhcpv4.DHCPv4{
			OpCode: dhcpv4.OpcodeBootRequest, HWType: 1, TransactionID: xid,
			// Broadcast flag: the client has no address, so both servers
			// answer by broadcast (dnsmasq would otherwise unicast to the
			// new address through an ARP entry it injects).
			Flags:        0x8000,
			ClientIPAddr: net.IPv4zero, YourIPAddr: net.IPv4zero, ServerIPAddr: net.IPv4zero, GatewayIPAddr: net.IPv4zero,
			ClientHWAddr: mac,
			Options: dhcpv4.OptionsFromList(
				dhcpv4.OptMessageType(mt),
				dhcpv4.OptParameterRequestList(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer),
			),
		}
	}
	offer, err := g.exchange(ctx, base(dhcpv4.MessageTypeDiscover), dhcpv4.MessageTypeOffer, ch, tries)
	if err != nil {
		return fmt.Errorf("DISCOVER: %w", err)
	}
	req := base(dhcpv4.MessageTypeRequest)
	req.UpdateOption(dhcpv4.OptServerIdentifier(offer.ServerIdentifier()))
	req.UpdateOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr))
	if _, err := g.exchange(ctx, req, dhcpv4.MessageTypeAck, ch, tries); err != nil {
		return fmt.Errorf("REQUEST %v: %w", offer.YourIPAddr, err)
	}
	return nil
}
