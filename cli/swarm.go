package cli

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/imprint-dev/imprint/deploy"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/ondisk"
	"github.com/spf13/pflag"
)

// swarmTracker is serve's tracker: peers only from the given subnets, by
// default this machine's own.
func swarmTracker(off bool, subnets []string) (*swarm.Tracker, error) {
	if off {
		return nil, nil
	}
	tr := &swarm.Tracker{}
	for _, s := range subnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("--swarm-subnet %q: want a CIDR subnet such as 10.0.0.0/24", s)
		}
		tr.Allowed = append(tr.Allowed, p.Masked())
	}
	if len(tr.Allowed) == 0 {
		l, err := swarm.LocalSubnets()
		if err != nil {
			return nil, fmt.Errorf("swarm tracker: this machine's subnets: %w", err)
		}
		tr.Allowed = l
	}
	return tr, nil
}

// swarmFlags are deploy's (and sync's) swarm flags.
type swarmFlags struct {
	on             bool
	server, listen string
	upMiB, downMiB float64
	peers          int
	stall          time.Duration
}

func (s *swarmFlags) register(f *pflag.FlagSet) {
	f.BoolVar(&s.on, "swarm", false, "take the chunks from the image's BitTorrent swarm first (peers and the server's web seed), seeding what this node checked to its peers; the rest comes from --from")
	f.StringVar(&s.server, "swarm-server", "", "imprint serve URL whose tracker and web seed to use (default: the first http(s) --from)")
	f.StringVar(&s.listen, "swarm-listen", ":6881", "address peers connect to")
	f.Float64Var(&s.upMiB, "swarm-up", 0, "upload cap to peers in MiB/s (0: none)")
	f.Float64Var(&s.downMiB, "swarm-down", 0, "download cap from peers in MiB/s (0: none)")
	f.IntVar(&s.peers, "swarm-peers", 50, "most peers to be connected to")
	f.DurationVar(&s.stall, "swarm-stall", 30*time.Second, "leave the swarm for --from when no data came from it for this long")
}

// options starts the node, or gives nil without --swarm.
func (s *swarmFlags) options(from []string) (*deploy.SwarmOptions, error) {
	if !s.on {
		return nil, nil
	}
	srv := s.server
	if srv == "" {
		srv = deploy.SwarmServer(from)
	}
	if srv == "" {
		return nil, fmt.Errorf("--swarm: no server: give --swarm-server or an http(s) --from")
	}
	if s.upMiB < 0 || s.downMiB < 0 || s.peers < 1 {
		return nil, fmt.Errorf("--swarm-up, --swarm-down must be at least 0 and --swarm-peers at least 1")
	}
	n, err := swarm.NewNode(swarm.Options{Listen: s.listen, UploadRate: int64(s.upMiB * (1 << 20)), DownloadRate: int64(s.downMiB * (1 << 20)), MaxPeers: s.peers})
	if err != nil {
		return nil, fmt.Errorf("--swarm: %w", err)
	}
	return &deploy.SwarmOptions{Node: n, Server: srv, Stall: s.stall}, nil
}

// seedDeployed offers a deployed disk's partitions to the image's swarm
// until leave is called. slot is the root slot the deploy wrote ("" on a
// disk with one slot): the other slot may hold another image.
func seedDeployed(o *deploy.SwarmOptions, img *image.Resolved, path string, t *layout.Table, slot string) (leave func(), err error) {
	d, err := disk.OpenDisk(path, disk.OpenOptions{})
	if err != nil {
		return nil, err
	}
	var places []swarm.Place
	for _, p := range img.Manifest.Partitions {
		pl, err := seedPartition(t, p.Name, slot)
		if err != nil {
			d.Close()
			return nil, err
		}
		places = append(places, swarm.Place{Content: p.Content, Target: disk.Section{D: d, Off: pl.Start, Len: pl.Len},
			Have: func(int) bool { return true }})
	}
	s, err := o.Node.Join(img.Manifest, o.Server, places)
	if err != nil {
		d.Close()
		return nil, err
	}
	return func() { s.Leave(); d.Close() }, nil
}

// seedPartition is where content partition name of the image written to
// slot is: the partition the deploy wrote it to (ondisk's PartitionOf).
func seedPartition(t *layout.Table, name, slot string) (layout.Placed, error) {
	want := ondisk.SlotPartition(name, slot)
	pl, ok := t.Find(want)
	if !ok {
		return layout.Placed{}, fmt.Errorf("partition %s (of slot %q) is not in the disk's table", want, slot)
	}
	return pl, nil
}
