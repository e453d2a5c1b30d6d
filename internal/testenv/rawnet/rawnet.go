// Package rawnet builds and sends hand-made Ethernet frames through a
// packet socket, for tests that play a hostile instance: gratuitous ARP
// for someone else's address, IPv4 with a forged source, frames from a
// forged MAC, TCP SYNs to addresses a normal socket cannot send to. It
// needs CAP_NET_RAW where it runs.
package rawnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Ethernet types and protocol numbers used here.
const (
	EtherIPv4 = 0x0800
	EtherARP  = 0x0806
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// Broadcast is the Ethernet broadcast address.
var Broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Ethernet prepends an Ethernet header.
func Ethernet(dst, src net.HardwareAddr, typ uint16, payload []byte) []byte {
	b := make([]byte, 0, 14+len(payload))
	b = append(b, dst...)
	b = append(b, src...)
	b = binary.BigEndian.AppendUint16(b, typ)
	return append(b, payload...)
}

// ARP is an Ethernet/IPv4 ARP packet (op 1 request, 2 reply).
func ARP(op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	b := []byte{0, 1, 0x08, 0x00, 6, 4}
	b = binary.BigEndian.AppendUint16(b, op)
	s, t := spa.As4(), tpa.As4()
	b = append(b, sha...)
	b = append(b, s[:]...)
	b = append(b, tha...)
	return append(b, t[:]...)
}

// IPv4 wraps payload in an IPv4 header with a correct checksum.
func IPv4(src, dst netip.Addr, proto uint8, payload []byte) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[4:], 0x4b47)
	h[6] = 0x40 // don't fragment
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	binary.BigEndian.PutUint16(h[10:], checksum(h, 0))
	return append(h, payload...)
}

// UDP is a UDP datagram with its checksum.
func UDP(src, dst netip.Addr, sport, dport uint16, data []byte) []byte {
	b := make([]byte, 8, 8+len(data))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(data)))
	b = append(b, data...)
	sum := checksum(b, pseudo(src, dst, ProtoUDP, len(b)))
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(b[6:], sum)
	return b
}

// TCPSyn is a TCP segment with only SYN set.
func TCPSyn(src, dst netip.Addr, sport, dport uint16, seq uint32) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], seq)
	b[12] = 5 << 4
	b[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(b[14:], 64240)
	binary.BigEndian.PutUint16(b[16:], checksum(b, pseudo(src, dst, ProtoTCP, len(b))))
	return b
}

func pseudo(src, dst netip.Addr, proto uint8, n int) uint32 {
	s, d := src.As4(), dst.As4()
	var sum uint32
	for _, a := range [][4]byte{s, d} {
		sum += uint32(a[0])<<8 | uint32(a[1])
		sum += uint32(a[2])<<8 | uint32(a[3])
	}
	return sum + uint32(proto) + uint32(n)
}

func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// Conn is a packet socket bound to one interface: it sends whole frames
// and sees every frame the interface receives.
type Conn struct {
	fd  int
	idx int
	MAC net.HardwareAddr
}

// Open binds a packet socket to the interface named ifname (in the
// calling thread's network namespace).
func Open(ifname string) (*Conn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind packet socket to %s: %w", ifname, err)
	}
	return &Conn{fd: fd, idx: ifi.Index, MAC: ifi.HardwareAddr}, nil
}

// Close closes the socket.
func (c *Conn) Close() error { return unix.Close(c.fd) }

// Send writes one frame.
func (c *Conn) Send(frame []byte) error {
	return unix.Sendto(c.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: c.idx, Halen: 6})
}

// Await reads frames until one satisfies match or the timeout passes.
func (c *Conn) Await(timeout time.Duration, match func(frame []byte) bool) ([]byte, bool) {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65536)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, false
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return nil, false
		}
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, false
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if match(buf[:n]) {
			return append([]byte(nil), buf[:n]...), true
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// ARPReply parses frame as an ARP reply; it returns the sender's
// addresses.
func ARPReply(frame []byte) (sha net.HardwareAddr, spa netip.Addr, ok bool) {
	if len(frame) < 42 || binary.BigEndian.Uint16(frame[12:]) != EtherARP || binary.BigEndian.Uint16(frame[20:]) != 2 {
		return nil, netip.Addr{}, false
	}
	a, _ := netip.AddrFromSlice(frame[28:32])
	return net.HardwareAddr(frame[22:28]), a, true
}

// TCPHeader parses frame as an Ethernet/IPv4/TCP segment.
func TCPHeader(frame []byte) (src, dst netip.Addr, sport, dport uint16, flags uint8, ok bool) {
	if len(frame) < 14+20+20 || binary.BigEndian.Uint16(frame[12:]) != EtherIPv4 || frame[14+9] != ProtoTCP {
		return
	}
	ihl := int(frame[14]&0x0f) * 4
	if len(frame) < 14+ihl+20 {
		return
	}
	src, _ = netip.AddrFromSlice(frame[14+12 : 14+16])
	dst, _ = netip.AddrFromSlice(frame[14+16 : 14+20])
	t := frame[14+ihl:]
	return src, dst, binary.BigEndian.Uint16(t[0:]), binary.BigEndian.Uint16(t[2:]), t[13], true
}

// SynAck tells whether a TCP flags byte has SYN and ACK.
func SynAck(flags uint8) bool { return flags&0x12 == 0x12 }
