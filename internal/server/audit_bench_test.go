package server

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// BenchmarkAuditedCreate measures what the audit record adds to a
// mutating call: instance creates through the API on the real (embedded)
// store, with the audit log on and off in the same run. Run with
// -cpu 1,8 to see group commit at work under concurrency.
func BenchmarkAuditedCreate(b *testing.B) {
	st := testStore(b)
	for _, audited := range []bool{false, true} {
		name := "audit=off"
		if audited {
			name = "audit=on"
		}
		b.Run(name, func(b *testing.B) {
			srv := New(st, Options{Hosts: fakeDirectory{newFakeHost()}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ScheduleWait: -1})
			if !audited {
				srv.audit, srv.auditor = nil, nil
			}
			hs := httptest.NewServer(srv.Handler())
			defer hs.Close()
			token := "tok-bench-" + randomHexB(b)
			if err := st.PutToken(b.Context(), token, "bench-tenant"); err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					body := fmt.Sprintf(`{"name":"b%s-%d","spec":{"restartPolicy":"Never","containers":[{"name":"main","image":%q}]}}`, randomHexB(b)[:6], i, imgBusybox)
					req, _ := http.NewRequest("POST", hs.URL+"/v1/instances", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+token)
					resp, err := hs.Client().Do(req)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
			})
		})
	}
}

func randomHexB(b *testing.B) string {
	buf := make([]byte, 8)
	if _, err := rand.Read(buf); err != nil {
		b.Fatal(err)
	}
	return hex.EncodeToString(buf)
}
