// Package hostlink connects host agents to the control plane over mutual
// TLS. The agent dials the server (it may sit behind NAT, as kubelets and
// Nomad clients do): it joins once with a token to get its certificate,
// registers its host, holds its lease through a long-lived heartbeat
// request, and follows the instances assigned to it through a watch
// stream of newline-delimited JSON. Status writes and deletes go back as
// ordinary requests, checked against the host the certificate names.
//
// The reverse direction (logs, exec, stats, images) is the agent's host
// API, the kubelet API model: the agent serves it on its own mTLS
// listener, and only the servers' certificate may call it (hostapi.go).
package hostlink

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/errdefs/errhttp"
	"github.com/kanga-run/kanga/internal/store"
)

// Paths of the server side.
const (
	pathJoin = "/hostlink/v1/join"
	pathHost = "/hostlink/v1/hosts/"
)

// JoinRequest is what an agent sends to get its certificate.
type JoinRequest struct {
	Name   string `json:"name"`
	Secret string `json:"secret"` // the join token's secret part
	CSR    []byte `json:"csr"`    // PEM
}

// JoinResponse carries the signed certificate and the CA.
type JoinResponse struct {
	Cert []byte `json:"cert"`
	CA   []byte `json:"ca"`
}

// RegisterResponse answers a registration: the host as stored, and what
// the control plane tells every agent.
type RegisterResponse struct {
	api.Host
	// InsecureRegistries are registries the agent may pull from on
	// private addresses, besides its own --insecure-registry.
	InsecureRegistries []string `json:"insecureRegistries,omitempty"`
}

// InstanceList is the host's instances at a revision.
type InstanceList struct {
	Items    []api.Instance `json:"items"`
	Revision int64          `json:"revision"`
}

// VersionedInstance is an instance with a fingerprint of the stored
// version, which a status write compares (optimistic concurrency without
// exposing etcd revisions).
type VersionedInstance struct {
	Instance    api.Instance `json:"instance"`
	Fingerprint string       `json:"fingerprint"`
}

// StatusWrite is an agent's new status for one instance.
type StatusWrite struct {
	UID         string             `json:"uid"`
	Fingerprint string             `json:"fingerprint"`
	Status      api.InstanceStatus `json:"status"`
}

// WatchEvent is one line of the watch stream.
type WatchEvent = store.InstanceEvent

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	code, status := errdefs.Code(err), errhttp.ToHTTP(err)
	writeJSON(w, status, api.Error{Code: code, Message: err.Error()})
}

// readError rebuilds the error class of a non-2xx response.
func readError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e api.Error
	if json.Unmarshal(b, &e) != nil || e.Code == "" {
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return classed{msg: e.Message, class: errdefs.FromCode(e.Code)}
}

// classed is a server's error rebuilt: its message as sent, and its class
// for errors.Is, without repeating the class name in the text.
type classed struct {
	msg   string
	class error
}

func (e classed) Error() string { return e.msg }
func (e classed) Unwrap() error { return e.class }

func jsonDecode(r io.Reader, out any) error { return json.NewDecoder(r).Decode(out) }

// decodeBody reads a JSON request body of at most limit bytes into v;
// what names it in errors.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any, what string) error {
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit)).Decode(v)
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &mbe):
		return fmt.Errorf("%s: request body is larger than %d bytes: %w", what, limit, errdefs.ErrTooLarge)
	default:
		return fmt.Errorf("%s: %v: %w", what, err, errdefs.ErrInvalidArgument)
	}
}
