package cli

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	imdisk "github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/identity"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/netboot"
	"github.com/imprint-dev/imprint/netboot/dhcp"
	tftpd "github.com/imprint-dev/imprint/netboot/tftp"
	"github.com/imprint-dev/imprint/ondisk"
	"github.com/spf13/cobra"
)

func newServe(e *env) *cobra.Command {
	var (
		h                          netboot.HTTP
		addr, public               string
		img, mode                  string
		installDisk, extraCmdline  string
		dhcpMode, iface, serverIP  string
		pool, router, leases, tftp string
		netmask                    int
		dns, reserve               []string
		ipxeDir, disk, slot        string
		identityFile               string
		trust, pins                []string
		httpLim                    netboot.HTTPLimits
		tftpLim                    tftpd.Limits
		bootCacheMiB               int64
		noSwarm, noSwarmPeer       bool
		swarmSubnets               []string
		swarmListen                string
		swarmPeers                 int
	)
	c := &cobra.Command{
		Use:   "serve (--store DIR --image NAME | --disk PATH) [--dhcp full|proxy --interface IFACE]",
		Short: "Serve a store, boot files and iPXE scripts over HTTP; DHCP (full or proxyDHCP) and TFTP for netbooting machines",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if h.SwarmTracker, err = swarmTracker(noSwarm, swarmSubnets); err != nil {
				return err
			}
			if h.Trust, err = trustFlag(trust); err != nil {
				return err
			}
			if len(trust) > 0 {
				if h.TrustKeys, err = trustKeyText(trust); err != nil {
					return err
				}
			}
			switch {
			case (h.Store == "") == (disk == ""):
				return fmt.Errorf("give one of --store DIR or --disk PATH")
			case slot != "" && disk == "":
				return fmt.Errorf("--slot chooses a root slot of --disk; give --disk PATH")
			case disk != "":
				d, err := ondisk.OpenDiskSlot(disk, slot)
				if err != nil {
					return err
				}
				defer d.Close()
				res := d.Resolved()
				if err := h.Trust.Check(res); err != nil {
					return fmt.Errorf("%s: %w; not serving it", disk, err)
				}
				h.Disk = d
				if img == "" {
					img = res.Manifest.Name + ":" + res.Manifest.Version
				}
				fmt.Fprintf(e.io.Err, "serving %s:%s (image id %s) from %s; every chunk is checked before it is sent\n", res.Manifest.Name, res.Manifest.Version, res.ID, disk)
			default:
				if _, err := os.Stat(filepath.Join(h.Store, "chunks")); err != nil {
					return fmt.Errorf("--store %s is not an imprint store: %w", h.Store, err)
				}
			}
			switch netboot.Mode(mode) {
			case netboot.Diskless, netboot.Install, netboot.Local:
			default:
				return fmt.Errorf("--mode %q: want diskless, install or local", mode)
			}
			if netboot.Mode(mode) == netboot.Install && installDisk == "" {
				return fmt.Errorf("--mode install needs --install-disk (e.g. /dev/vda or serial=S3Z1NB0K)")
			}
			if netboot.Mode(mode) == netboot.Install {
				if err := imdisk.CheckSelector(installDisk); err != nil {
					return fmt.Errorf("--install-disk: %w", err)
				}
			}
			if bootCacheMiB <= 0 || bootCacheMiB > 1<<20 {
				return fmt.Errorf("--boot-cache %d: want MiB between 1 and %d", bootCacheMiB, 1<<20)
			}
			h.BootCache = bootCacheMiB << 20
			if identityFile != "" {
				var warn string
				if h.Identity, h.IdentitySig, warn, err = netboot.LoadIdentity(identityFile, h.Trust); err != nil {
					return err
				}
				if warn != "" {
					fmt.Fprintln(e.io.Err, "warning: "+warn)
				}
			}
			for _, pin := range pins {
				name, version, ok := strings.Cut(pin, "=")
				if !ok || image.ValidName(name) != nil || image.ValidName(version) != nil {
					return fmt.Errorf("--pin %q: want NAME=VERSION", pin)
				}
				if h.Pins == nil {
					h.Pins = map[string]string{}
				}
				if old, dup := h.Pins[name]; dup && old != version {
					return fmt.Errorf("--pin: image %s is pinned twice (%s and %s)", name, old, version)
				}
				h.Pins[name] = version
			}
			if err := h.CheckPins(cmd.Context()); err != nil {
				return err
			}
			h.Decider = netboot.Static{Default: netboot.Decision{Image: img, Mode: netboot.Mode(mode), InstallDisk: installDisk, Cmdline: extraCmdline}}
			logf := func(f string, a ...any) { fmt.Fprintf(e.io.Err, f+"\n", a...) }
			h.Logf = logf
			h.Fleet = &netboot.Fleet{}
			if h.Identity != nil {
				// LoadIdentity parsed it already; the status page names
				// nodes by its name lines.
				if h.Fleet.Identity, err = identity.Parse(bytes.NewReader(h.Identity), identityFile); err != nil {
					return fmt.Errorf("--identity: %w", err)
				}
			}
			srv := &netboot.Server{HTTP: &h, HTTPAddr: addr, IPXEDir: ipxeDir, Logf: logf, HTTPLimits: httpLim, TFTPLimits: tftpLim}
			var ip net.IP
			if serverIP != "" {
				if ip = net.ParseIP(serverIP).To4(); ip == nil {
					return fmt.Errorf("--server-ip %q is not an IPv4 address", serverIP)
				}
			} else if iface != "" {
				var err error
				if ip, err = interfaceIP(iface); err != nil {
					return err
				}
			}
			if public == "" {
				host, port, err := net.SplitHostPort(addr)
				if err != nil {
					return fmt.Errorf("--http %q: %w", addr, err)
				}
				if host == "" || host == "0.0.0.0" || host == "::" {
					if ip == nil {
						return fmt.Errorf("give --public-url, --server-ip or --interface so machines know where to fetch from")
					}
					host = ip.String()
				}
				public = "http://" + net.JoinHostPort(host, port) + "/"
			}
			h.Public = public
			if h.SwarmTracker != nil && !noSwarmPeer {
				if swarmPeers < 1 {
					return fmt.Errorf("--swarm-peers %d: want at least 1", swarmPeers)
				}
				listen := swarmListen
				if listen == "" {
					host, _, _ := net.SplitHostPort(addr)
					listen = net.JoinHostPort(host, "6881")
				}
				n, err := swarm.NewNode(swarm.Options{Listen: listen, MaxPeers: swarmPeers, AllowedNets: h.SwarmTracker.Allowed})
				if err != nil {
					// The web seed still serves every node.
					fmt.Fprintf(e.io.Err, "warning: swarm seeding peer on %s: %v; nodes take the image from the web seed\n", listen, err)
				} else {
					h.SwarmPeer = n
					defer h.CloseSwarm()
					fmt.Fprintf(e.io.Err, "swarm: seeding peer on %s\n", n.Addr())
				}
			}
			if tftp != "" {
				srv.TFTPAddr = tftp
			}
			switch dhcpMode {
			case "off":
			case "full", "proxy":
				if iface == "" || ip == nil {
					return fmt.Errorf("--dhcp %s needs --interface (and its address, or --server-ip)", dhcpMode)
				}
				cfg := &dhcp.Config{Mode: dhcp.Full, Interface: iface, ServerIP: ip, LeaseFile: leases}
				if dhcpMode == "proxy" {
					cfg.Mode = dhcp.Proxy
				} else {
					lo, hi, ok := strings.Cut(pool, "-")
					cfg.PoolStart, cfg.PoolEnd = net.ParseIP(lo).To4(), net.ParseIP(hi).To4()
					if !ok || cfg.PoolStart == nil || cfg.PoolEnd == nil {
						return fmt.Errorf("--dhcp full needs --pool START-END, e.g. 10.0.0.100-10.0.0.200")
					}
					cfg.Netmask = net.CIDRMask(netmask, 32)
					if router != "" {
						cfg.Router = net.ParseIP(router).To4()
					}
					for _, d := range dns {
						cfg.DNS = append(cfg.DNS, net.ParseIP(d).To4())
					}
					for _, r := range reserve {
						res, err := parseReservation(r)
						if err != nil {
							return err
						}
						cfg.Reservations = append(cfg.Reservations, res)
					}
				}
				srv.DHCP = cfg
				if srv.TFTPAddr == "" {
					srv.TFTPAddr = net.JoinHostPort(ip.String(), "69")
				}
			default:
				return fmt.Errorf("--dhcp %q: want off, full or proxy", dhcpMode)
			}
			return srv.Run(cmd.Context())
		},
	}
	f := c.Flags()
	f.StringVar(&h.Store, "store", "", "store directory to serve")
	f.StringVar(&disk, "disk", "", "serve the image a deployed disk holds, from its partitions (instead of --store); the image is also the default --image")
	f.StringVar(&slot, "slot", "", "with --disk: serve the image of root slot a or b (default: the active slot)")
	f.StringArrayVar(&pins, "pin", nil, "NAME=VERSION: the version of image NAME that \"newest\" means for netboots and syncs (later versions stay fetchable by name, for canaries); repeatable")
	f.StringArrayVar(&trust, "trust", nil, "serve and boot only images signed by this minisign public key; netbooted agents check it too (repeatable)")
	f.StringVar(&addr, "http", ":8080", "HTTP listen address")
	f.StringVar(&public, "public-url", "", "URL machines reach this server at (default: from --http and the interface address)")
	f.StringVar(&img, "image", "", "image machines boot, NAME or NAME:VERSION")
	f.StringVar(&mode, "mode", "diskless", "what netbooting machines do: diskless, install or local")
	f.StringVar(&installDisk, "install-disk", "", "disk the agent installs onto with --mode install, resolved on each machine at boot: "+imdisk.SelectorHelp)
	f.StringVar(&identityFile, "identity", "", "site identity map (an identity.conf) handed out at "+netboot.IdentityPath+" with FILE.minisig (imprint key sign); agents use it instead of their image's when it verifies under their trusted keys")
	f.StringVar(&h.Agent, "agent", "", "agent initramfs for images that carry none (imprint initrd)")
	f.StringVar(&h.Console, "console", "console=ttyS0", "kernel console argument for netbooted machines")
	f.StringVar(&extraCmdline, "cmdline", "", "extra kernel arguments for netbooted machines")
	f.StringVar(&dhcpMode, "dhcp", "off", "DHCP: off, full (addresses and boot options) or proxy (boot options beside the site's DHCP server)")
	f.StringVar(&iface, "interface", "", "interface to serve DHCP on and to bind to")
	f.StringVar(&serverIP, "server-ip", "", "this server's address on --interface (default: the interface's first IPv4 address)")
	f.StringVar(&pool, "pool", "", "--dhcp full: address pool START-END")
	f.IntVar(&netmask, "netmask", 24, "--dhcp full: prefix length of the network")
	f.StringVar(&router, "router", "", "--dhcp full: default gateway to hand out")
	f.StringArrayVar(&dns, "dns", nil, "--dhcp full: DNS server to hand out (repeatable)")
	f.StringArrayVar(&reserve, "reserve", nil, "--dhcp full: MAC=IP[,HOSTNAME] reservation (repeatable)")
	f.StringVar(&leases, "leases", "", "--dhcp full: lease file, written atomically (default: in memory)")
	f.StringVar(&tftp, "tftp", "", "TFTP listen address for PXE ROMs (default with --dhcp: port 69 on the server address)")
	f.StringVar(&ipxeDir, "ipxe-dir", netboot.DefaultIPXEDir, "directory with ipxe.efi and undionly.kpxe, sent to PXE clients only when the served image carries none")
	f.BoolVar(&noSwarm, "no-swarm", false, "do not be the swarm's tracker and web seed (/swarm/...)")
	f.BoolVar(&noSwarmPeer, "no-swarm-peer", false, "be the swarm's tracker and web seed only, not also a seeding BitTorrent peer")
	f.StringVar(&swarmListen, "swarm-listen", "", "address the seeding peer takes peers on (default: the --http host, port 6881)")
	f.IntVar(&swarmPeers, "swarm-peers", 50, "most peers the seeding peer is connected to per image")
	f.StringArrayVar(&swarmSubnets, "swarm-subnet", nil, "subnet (CIDR) whose addresses the tracker hands out (repeatable; default: this machine's interfaces' subnets)")
	// Limits (docs/limits.md): what clients on the provisioning network
	// can make the server hold.
	f.Int64Var(&bootCacheMiB, "boot-cache", netboot.DefaultBootCache>>20, "MiB of decoded boot-file and loader chunks kept between requests (chunks being sent are shared, never held twice)")
	f.IntVar(&httpLim.MaxConns, "http-max-conns", netboot.DefaultMaxConns, "most open HTTP connections; more wait in the listen backlog")
	f.DurationVar(&httpLim.IdleTimeout, "http-idle-timeout", netboot.DefaultIdleTimeout, "close a keep-alive HTTP connection idle this long")
	f.DurationVar(&httpLim.ReadHeaderTimeout, "http-header-timeout", netboot.DefaultReadHeaderTimeout, "time a client has to send its request headers")
	f.DurationVar(&httpLim.WriteTimeout, "http-write-timeout", netboot.DefaultWriteTimeout, "drop a client that takes longer than this for one write (the deadline moves on with each write)")
	f.IntVar(&tftpLim.MaxTransfers, "tftp-max-transfers", tftpd.DefaultMaxTransfers, "most TFTP transfers at once; more requests are dropped (clients send them again)")
	f.IntVar(&tftpLim.MaxTransfersPerClient, "tftp-max-per-client", tftpd.DefaultMaxTransfersPerClient, "most TFTP transfers at once for one client address")
	f.DurationVar(&tftpLim.MaxTransferTime, "tftp-max-transfer-time", tftpd.DefaultMaxTransferTime, "end a TFTP transfer that has run this long")
	return c
}

func interfaceIP(name string) (net.IP, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("--interface %s: %w", name, err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.To4(), nil
		}
	}
	return nil, fmt.Errorf("--interface %s has no IPv4 address; give --server-ip", name)
}

func parseReservation(s string) (dhcp.Reservation, error) {
	macS, rest, ok := strings.Cut(s, "=")
	ipS, host, _ := strings.Cut(rest, ",")
	mac, err := net.ParseMAC(macS)
	ip := net.ParseIP(ipS).To4()
	if !ok || err != nil || ip == nil {
		return dhcp.Reservation{}, fmt.Errorf("--reserve %q: want MAC=IP[,HOSTNAME]", s)
	}
	return dhcp.Reservation{MAC: mac, IP: ip, Hostname: host}, nil
}
