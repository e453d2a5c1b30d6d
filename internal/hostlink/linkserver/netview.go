package linkserver

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostlink"
)

// netView streams the network view (see package netview) to an agent: a
// full state, then what changed, one JSON object a line.
func (s *Server) netView(w http.ResponseWriter, r *http.Request, host string) error {
	if s.NetView == nil {
		return fmt.Errorf("this control plane keeps no network view: %w", errdefs.ErrUnavailable)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	for u := range s.NetView.Subscribe(r.Context()) {
		if enc.Encode(hostlink.WireNetUpdate(u)) != nil || rc.Flush() != nil {
			return nil
		}
	}
	return nil
}
