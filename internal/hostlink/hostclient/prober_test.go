package hostclient

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/hostlink"
)

// fakeLink stands in for the link server's Connected.
type fakeLink struct {
	mu        sync.Mutex
	connected map[string]bool
}

func (l *fakeLink) Connected(host string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.connected[host]
}

func (l *fakeLink) set(host string, on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.connected[host] = on
}

// The prober counts a host alive while its agent holds a link request
// open here, or when its host API gives any HTTP answer; otherwise not.
func TestProber(t *testing.T) {
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != hostlink.PathPing {
			t.Errorf("probe asked %s", r.URL.Path)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	link := &fakeLink{connected: map[string]bool{}}
	p := &Prober{Link: link, TLS: ts.Client().Transport.(*http.Transport).TLSClientConfig}

	if how, err := p.Alive(t.Context(), &api.Host{Name: "h", Address: ts.URL}); err != nil {
		t.Fatalf("host API answering: %q, %v", how, err)
	}
	if _, err := p.Alive(t.Context(), &api.Host{Name: "h"}); err == nil {
		t.Fatal("a host with no link and no address is alive")
	}
	link.set("h", true)
	if how, err := p.Alive(t.Context(), &api.Host{Name: "h"}); err != nil || how == "" {
		t.Fatalf("linked host: %q, %v", how, err)
	}
	link.set("h", false)
	ts.Close()
	if _, err := p.Alive(t.Context(), &api.Host{Name: "h", Address: ts.URL}); err == nil {
		t.Fatal("a closed host API answered")
	}
}
