package httpserver

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
)

// BenchmarkLimits compares a 1 KiB JSON POST over a kept-alive loopback
// connection through a bare http.Server and through New (the
// body deadline, its lifting at EOF, MaxBytesReader), to show what the
// limits cost per request.
func BenchmarkLimits(b *testing.B) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 1<<20))
		fmt.Fprint(w, n)
	})
	body := bytes.Repeat([]byte("k"), 1<<10)
	for _, tc := range []struct {
		name string
		srv  func() *http.Server
	}{
		{"bare", func() *http.Server { return &http.Server{Handler: echo} }},
		{"limits", func() *http.Server {
			return New(echo, DefaultLimits, slog.New(slog.NewTextHandler(io.Discard, nil)))
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := tc.srv()
			go func() { _ = srv.Serve(ln) }()
			defer srv.Close()
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			url := "http://" + ln.Addr().String() + "/"
			b.ResetTimer()
			for range b.N {
				resp, err := hc.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}
