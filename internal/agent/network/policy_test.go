package network

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/kanga-run/kanga/internal/model"
)

func TestDisjointCoversRulesWithoutOverlap(t *testing.T) {
	for _, set := range [][]string{
		{"10.0.0.0/8"},
		{"10.0.0.0/8", "10.1.0.0/16:443"},
		{"10.1.0.0/16:443/tcp", "10.0.0.0/8:400-500", "10.1.2.3:53/udp", "0.0.0.0/0:25"},
		{"192.168.0.0/24:80", "192.168.0.128/25:81", "192.168.0.0/23:79-80/tcp", "192.168.1.0/24"},
		{"255.255.255.255", "0.0.0.0/1:1-65535/udp"},
	} {
		var rules []model.EgressRule
		for _, s := range set {
			r, err := model.ParseEgressRule(s)
			if err != nil {
				t.Fatal(err)
			}
			rules = append(rules, r)
		}
		boxes := disjoint(rules)
		for i := range boxes {
			for j := i + 1; j < len(boxes); j++ {
				if overlap(boxes[i], boxes[j]) {
					t.Errorf("%v: boxes %v and %v overlap", set, boxes[i], boxes[j])
				}
			}
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for range 20000 {
			// Points near rule boundaries are the interesting ones.
			r := rules[rng.IntN(len(rules))]
			b := ruleBoxes(r)[0]
			a := b.addr[0] + uint32(rng.IntN(3)) - 1
			if rng.IntN(2) == 0 {
				a = b.addr[1] + uint32(rng.IntN(3)) - 1
			}
			p := []uint8{1, 6, 17, 0, 255}[rng.IntN(5)]
			port := uint16(rng.IntN(600))
			if rng.IntN(3) == 0 {
				port = b.port[rng.IntN(2)] + uint16(rng.IntN(3)) - 1
			}
			want := false
			for _, r := range rules {
				for _, rb := range ruleBoxes(r) {
					want = want || inBox(rb, a, p, port)
				}
			}
			got := false
			for _, bx := range boxes {
				got = got || inBox(bx, a, p, port)
			}
			if got != want {
				t.Fatalf("%v: point %d/%d/%d covered %v by the boxes, %v by the rules", set, a, p, port, got, want)
			}
		}
	}
}

func inBox(b box, a uint32, p uint8, port uint16) bool {
	return b.addr[0] <= a && a <= b.addr[1] && b.proto[0] <= p && p <= b.proto[1] && b.port[0] <= port && port <= b.port[1]
}

func overlap(x, y box) bool {
	return x.addr[0] <= y.addr[1] && y.addr[0] <= x.addr[1] &&
		x.proto[0] <= y.proto[1] && y.proto[0] <= x.proto[1] &&
		x.port[0] <= y.port[1] && y.port[0] <= x.port[1]
}

func TestMergePrefixes(t *testing.T) {
	got := mergePrefixes([]netip.Prefix{
		netip.MustParsePrefix("10.0.1.0/24"), netip.MustParsePrefix("10.0.0.0/24"),
		netip.MustParsePrefix("10.0.0.128/25"), netip.MustParsePrefix("10.2.0.0/16"),
	})
	want := [][2]uint32{{0x0a000000, 0x0a0001ff}, {0x0a020000, 0x0a02ffff}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("mergePrefixes = %x, want %x", got, want)
	}
}

func TestResolvNameservers(t *testing.T) {
	got := resolvNameservers([]byte("nameserver 127.0.0.53\nnameserver 10.0.0.2\n# nameserver 1.1.1.1\nnameserver ::1\nsearch x\n"))
	if len(got) != 1 || got[0].String() != "10.0.0.2" {
		t.Errorf("got %v, want [10.0.0.2]", got)
	}
}
