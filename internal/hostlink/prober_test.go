package hostlink

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kanga-run/kanga/api"
)

// The prober counts a host alive while its agent holds a link request
// open here, or when its host API gives any HTTP answer; otherwise not.
func TestProber(t *testing.T) {
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != pathPing {
			t.Errorf("probe asked %s", r.URL.Path)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	link := &Server{}
	p := &Prober{Link: link, TLS: ts.Client().Transport.(*http.Transport).TLSClientConfig}

	if how, err := p.Alive(t.Context(), &api.Host{Name: "h", Address: ts.URL}); err != nil {
		t.Fatalf("host API answering: %q, %v", how, err)
	}
	if _, err := p.Alive(t.Context(), &api.Host{Name: "h"}); err == nil {
		t.Fatal("a host with no link and no address is alive")
	}
	done := link.linked("h")
	if how, err := p.Alive(t.Context(), &api.Host{Name: "h"}); err != nil || how == "" {
		t.Fatalf("linked host: %q, %v", how, err)
	}
	done()
	if link.Connected("h") {
		t.Fatal("still connected after its request ended")
	}
	ts.Close()
	if _, err := p.Alive(t.Context(), &api.Host{Name: "h", Address: ts.URL}); err == nil {
		t.Fatal("a closed host API answered")
	}
}
