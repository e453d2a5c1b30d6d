package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
)

// PreviousLogs of the fake host: container "side" has restarted, any
// other has not.
func (h *fakeHost) PreviousLogs(ctx context.Context, inst *api.Instance, container string) (io.ReadCloser, error) {
	if container != "side" {
		return nil, fmt.Errorf("container %q has not restarted: %w", container, errdefs.ErrNotFound)
	}
	return io.NopCloser(strings.NewReader("previous run of " + container + "\n")), nil
}

// oneLogHost hides the fake host's PreviousLogs, as a host that keeps
// one stream per container would.
type oneLogHost struct{ hostcontract.Host }

func TestPreviousLogs(t *testing.T) {
	e := newEnv(t, 0)
	r := e.do(t, "POST", "/v1/instances", e.a.token,
		`{"name":"web","spec":{"containers":[{"name":"app","image":"`+imgBusybox+`"},{"name":"side","image":"`+imgBusybox+`"}]}}`)
	wantStatus(t, r, http.StatusCreated)

	tests := []struct {
		query  string
		status int
		want   string // the body, or a part of the error
	}{
		{"?previous=true&container=side", http.StatusOK, "previous run of side\n"},
		// The previous run has ended: follow has nothing to wait for.
		{"?previous=true&container=side&follow=true", http.StatusOK, "previous run of side\n"},
		{"?previous=true", http.StatusNotFound, `container "app" has not restarted`},
		{"?previous=maybe", http.StatusBadRequest, "previous"},
		{"?previous=false&container=side", http.StatusOK, fakeLogs("side")},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			n := len(e.host.logCallsSeen())
			r := e.do(t, "GET", "/v1/instances/web/logs"+tt.query, e.a.token, "")
			if tt.status != http.StatusOK {
				wantError(t, r, tt.status, map[int]string{404: "NotFound", 400: "InvalidArgument"}[tt.status], tt.want)
				return
			}
			wantStatus(t, r, http.StatusOK)
			if string(r.body) != tt.want {
				t.Errorf("body = %q, want %q", r.body, tt.want)
			}
			previous := strings.Contains(tt.query, "previous=true")
			if got := len(e.host.logCallsSeen()) - n; previous && got != 0 {
				t.Errorf("previous=true also read the current logs (%d calls)", got)
			}
		})
	}

	// Another tenant does not see the instance at all.
	r = e.do(t, "GET", "/v1/instances/web/logs?previous=true&container=side", e.b.token, "")
	wantError(t, r, http.StatusNotFound, "NotFound")

	// The SDK asks for the same.
	rc, err := e.client(e.a).Logs(t.Context(), "web", client.LogsOptions{Container: "side", Previous: true})
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "previous run of side\n" {
		t.Errorf("SDK previous logs = %q", b)
	}
}

func TestPreviousLogsNotKept(t *testing.T) {
	e := newEnv(t, 0)
	e.server.hosts = fakeDirectory{oneLogHost{e.host}} // before any request: handlers read it
	r := e.do(t, "POST", "/v1/instances", e.a.token,
		`{"name":"web","spec":{"containers":[{"name":"app","image":"`+imgBusybox+`"}]}}`)
	wantStatus(t, r, http.StatusCreated)
	r = e.do(t, "GET", "/v1/instances/web/logs?previous=true", e.a.token, "")
	wantError(t, r, http.StatusNotImplemented, "NotImplemented", "one log per container", "drop previous=true")
	r = e.do(t, "GET", "/v1/instances/web/logs", e.a.token, "")
	wantStatus(t, r, http.StatusOK)
}
