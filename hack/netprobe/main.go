// Command netprobe runs inside test instances: it serves TCP and UDP for
// others to probe, and probes others the way a tenant would, or a hostile
// one: TCP connect, UDP echo, ICMP echo, ARP, and hand-made frames with a
// forged source address or MAC, gratuitous ARP for someone else's address,
// a TCP SYN to 127.0.0.1 through the gateway, broadcast. The isolation
// tests build it statically into a test image.
//
//	netprobe serve [-tcp 80] [-udp 9] [-log /tmp/udp.log]
//	netprobe [-timeout 1s] PROBE...
//
// where each PROBE is one of
//
//	tcp:IP:PORT        connect
//	udp:IP:PORT        send, wait for the echo
//	icmp:IP            echo request, wait for the reply
//	arp:IP             ARP request on eth0, wait for a reply
//	syn:IP:PORT        hand-made TCP SYN to the gateway's MAC, wait for SYN-ACK
//	spoofudp:SRC:IP:PORT   UDP with source SRC, to the gateway's MAC
//	spoofmac:MAC:IP:PORT   UDP from MAC (own address), to the gateway's MAC
//	garp:IP            gratuitous ARP claiming IP with eth0's MAC
//	bcast:PORT         UDP to 255.255.255.255 and the subnet's broadcast
//
// Probes run in parallel; each prints "PROBE ok|fail|n/a DETAIL". The
// exit status is 0 when every line was printed.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/internal/testenv/rawnet"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		serve(os.Args[2:])
		return
	}
	timeout := flag.Duration("timeout", time.Second, "how long a probe waits for an answer")
	flag.Parse()
	out := make([]string, flag.NArg())
	var wg sync.WaitGroup
	for i, p := range flag.Args() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, detail := probe(p, *timeout)
			out[i] = strings.TrimSpace(fmt.Sprintf("%s %s %s", p, res, detail))
		}()
	}
	wg.Wait()
	for _, l := range out {
		fmt.Println(l)
	}
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	tcpPort := fs.Int("tcp", 80, "TCP port answering every connection with a line")
	udpPort := fs.Int("udp", 9, "UDP port echoing every datagram")
	logPath := fs.String("log", "/tmp/udp.log", "file that records each datagram's source address")
	_ = fs.Parse(args)
	l, err := net.Listen("tcp4", fmt.Sprintf(":%d", *tcpPort))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, "hello from netprobe")
			c.Close()
		}
	}()
	pc, err := net.ListenPacket("udp4", fmt.Sprintf(":%d", *udpPort))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			continue
		}
		fmt.Fprintf(f, "%s %s\n", from.(*net.UDPAddr).IP, strings.TrimSpace(string(buf[:n])))
		_, _ = pc.WriteTo(buf[:n], from)
	}
}

func probe(p string, timeout time.Duration) (string, string) {
	kind, rest, _ := strings.Cut(p, ":")
	parts := strings.Split(rest, ":")
	fail := func(err error) (string, string) {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EPROTONOSUPPORT) ||
			errors.Is(err, unix.ESOCKTNOSUPPORT) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EINVAL) && kind != "tcp" {
			return "n/a", err.Error()
		}
		return "fail", err.Error()
	}
	switch kind {
	case "tcp":
		c, err := net.DialTimeout("tcp4", rest, timeout)
		if err != nil {
			return "fail", err.Error()
		}
		c.Close()
		return "ok", ""
	case "udp":
		c, err := net.Dial("udp4", rest)
		if err != nil {
			return "fail", err.Error()
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write([]byte("netprobe")); err != nil {
			return "fail", err.Error()
		}
		buf := make([]byte, 64)
		if _, err := c.Read(buf); err != nil {
			return "fail", err.Error()
		}
		return "ok", ""
	case "icmp":
		if err := ping(rest, timeout); err != nil {
			return fail(err)
		}
		return "ok", ""
	case "arp":
		mac, err := arp(rest, timeout)
		if err != nil {
			return fail(err)
		}
		return "ok", mac
	case "syn":
		ok, err := syn(parts[0], parts[1], timeout)
		if err != nil {
			return fail(err)
		}
		if !ok {
			return "fail", "no SYN-ACK"
		}
		return "ok", "SYN-ACK"
	case "spoofudp", "spoofmac", "garp", "bcast":
		if err := send(kind, parts); err != nil {
			return fail(err)
		}
		return "sent", ""
	}
	return "fail", "unknown probe"
}

// ping sends one ICMP echo: through an unprivileged ping socket if the
// namespace allows it, else a raw socket.
func ping(ip string, timeout time.Duration) error {
	dst, err := netip.ParseAddr(ip)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP)
	raw := false
	if err != nil {
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP); err != nil {
			return err
		}
		raw = true
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	id := uint16(os.Getpid())
	msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'k', 'a', 'n', 'g', 'a'}
	sum := icmpSum(msg)
	msg[2], msg[3] = byte(sum>>8), byte(sum)
	to := &unix.SockaddrInet4{Addr: dst.As4()}
	if err := unix.Sendto(fd, msg, 0, to); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("no echo reply: %w", err)
		}
		b := buf[:n]
		if raw && n > 20 {
			b = b[int(b[0]&0x0f)*4:]
		}
		if f, ok := from.(*unix.SockaddrInet4); ok && f.Addr == dst.As4() && len(b) > 0 && b[0] == 0 {
			return nil
		}
	}
	return fmt.Errorf("no echo reply")
}

func icmpSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// eth0 returns the instance's address, prefix and gateway.
func eth0() (netip.Prefix, netip.Addr, error) {
	ifi, err := net.InterfaceByName("eth0")
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, err
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, err
	}
	var self netip.Prefix
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			self = p
		}
	}
	if !self.IsValid() {
		return self, netip.Addr{}, fmt.Errorf("eth0 has no IPv4 address")
	}
	gw, err := defaultGateway()
	return self, gw, err
}

func defaultGateway() (netip.Addr, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return netip.Addr{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 2 && fs[1] == "00000000" {
			v, err := strconv.ParseUint(fs[2], 16, 32)
			if err != nil {
				continue
			}
			return netip.AddrFrom4([4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no default route")
}

// resolve asks for ip's MAC on c.
func resolve(c *rawnet.Conn, self, ip netip.Addr, timeout time.Duration) (net.HardwareAddr, error) {
	req := rawnet.Ethernet(rawnet.Broadcast, c.MAC, rawnet.EtherARP, rawnet.ARP(1, c.MAC, self, make(net.HardwareAddr, 6), ip))
	var mac net.HardwareAddr
	for try := 0; try < 2; try++ {
		if err := c.Send(req); err != nil {
			return nil, err
		}
		if _, ok := c.Await(timeout/2, func(f []byte) bool {
			sha, spa, ok := rawnet.ARPReply(f)
			if ok && spa == ip {
				mac = sha
			}
			return ok && spa == ip
		}); ok {
			return mac, nil
		}
	}
	return nil, fmt.Errorf("no ARP reply")
}

func arp(ip string, timeout time.Duration) (string, error) {
	dst, err := netip.ParseAddr(ip)
	if err != nil {
		return "", err
	}
	self, _, err := eth0()
	if err != nil {
		return "", err
	}
	c, err := rawnet.Open("eth0")
	if err != nil {
		return "", err
	}
	defer c.Close()
	mac, err := resolve(c, self.Addr(), dst, timeout)
	if err != nil {
		return "", err
	}
	return mac.String(), nil
}

// gatewayConn opens eth0 and resolves the gateway's MAC.
func gatewayConn(timeout time.Duration) (*rawnet.Conn, netip.Prefix, net.HardwareAddr, error) {
	self, gw, err := eth0()
	if err != nil {
		return nil, self, nil, err
	}
	c, err := rawnet.Open("eth0")
	if err != nil {
		return nil, self, nil, err
	}
	mac, err := resolve(c, self.Addr(), gw, timeout)
	if err != nil {
		c.Close()
		return nil, self, nil, fmt.Errorf("gateway %s: %w", gw, err)
	}
	return c, self, mac, nil
}

func syn(ip, port string, timeout time.Duration) (bool, error) {
	dst, err := netip.ParseAddr(ip)
	if err != nil {
		return false, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return false, err
	}
	c, self, gwMAC, err := gatewayConn(timeout)
	if err != nil {
		return false, err
	}
	defer c.Close()
	sport := uint16(40000 + os.Getpid()%20000)
	f := rawnet.Ethernet(gwMAC, c.MAC, rawnet.EtherIPv4,
		rawnet.IPv4(self.Addr(), dst, rawnet.ProtoTCP, rawnet.TCPSyn(self.Addr(), dst, sport, uint16(p), 1)))
	if err := c.Send(f); err != nil {
		return false, err
	}
	_, ok := c.Await(timeout, func(f []byte) bool {
		_, _, sp, dp, flags, isTCP := rawnet.TCPHeader(f)
		return isTCP && sp == uint16(p) && dp == sport && rawnet.SynAck(flags)
	})
	return ok, nil
}

func send(kind string, parts []string) error {
	c, self, gwMAC, err := gatewayConn(time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	port := func(s string) uint16 { n, _ := strconv.ParseUint(s, 10, 16); return uint16(n) }
	var frames [][]byte
	switch kind {
	case "spoofudp": // SRC:IP:PORT
		src, err1 := netip.ParseAddr(parts[0])
		dst, err2 := netip.ParseAddr(parts[1])
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		frames = append(frames, rawnet.Ethernet(gwMAC, c.MAC, rawnet.EtherIPv4,
			rawnet.IPv4(src, dst, rawnet.ProtoUDP, rawnet.UDP(src, dst, 9, port(parts[2]), []byte("spoofed-ip")))))
	case "spoofmac": // MAC:IP:PORT, the MAC written with dashes
		mac, err1 := net.ParseMAC(strings.ReplaceAll(parts[0], "-", ":"))
		dst, err2 := netip.ParseAddr(parts[1])
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		frames = append(frames, rawnet.Ethernet(gwMAC, mac, rawnet.EtherIPv4,
			rawnet.IPv4(self.Addr(), dst, rawnet.ProtoUDP, rawnet.UDP(self.Addr(), dst, 9, port(parts[2]), []byte("spoofed-mac")))))
	case "garp": // IP
		ip, err := netip.ParseAddr(parts[0])
		if err != nil {
			return err
		}
		for _, op := range []uint16{1, 2} {
			frames = append(frames, rawnet.Ethernet(rawnet.Broadcast, c.MAC, rawnet.EtherARP,
				rawnet.ARP(op, c.MAC, ip, rawnet.Broadcast, ip)))
		}
	case "bcast": // PORT
		b := self.Masked().Addr().As4()
		bits := self.Bits()
		for i := bits; i < 32; i++ {
			b[i/8] |= 1 << (7 - i%8)
		}
		for _, dst := range []netip.Addr{netip.AddrFrom4([4]byte{255, 255, 255, 255}), netip.AddrFrom4(b)} {
			frames = append(frames, rawnet.Ethernet(rawnet.Broadcast, c.MAC, rawnet.EtherIPv4,
				rawnet.IPv4(self.Addr(), dst, rawnet.ProtoUDP, rawnet.UDP(self.Addr(), dst, 9, port(parts[0]), []byte("broadcast")))))
		}
	}
	for range 3 {
		for _, f := range frames {
			if err := c.Send(f); err != nil {
				return err
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
