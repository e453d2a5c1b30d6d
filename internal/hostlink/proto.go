// Package hostlink is the protocol between host agents and the control
// plane, over mutual TLS: paths, the link's messages (wire types of their
// own, converted to and from the host contract's types here, convert.go,
// and from the store's by the server), and the error encoding. The two
// ends of each direction are its sub-packages:
//
// Agent -> control plane (the agent dials; it may sit behind NAT, as
// kubelets and Nomad clients do): package join gets the agent its
// certificate with a join token (and issues the tokens on the control
// plane); package agentside is the agent's link, which registers its
// host, holds its lease through a long-lived heartbeat request, follows
// the instances assigned to it through a watch stream of newline-delimited
// JSON and writes their status back; package linkserver is the control
// plane's end, which checks every write against the host the
// certificate names.
//
// Control plane -> host: the agent's host API, the kubelet API model,
// served by package hostapi on the agent's own mTLS listener and called
// by package hostclient; only the control plane's certificate may call it.
package hostlink

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/errdefs/errhttp"
)

// Paths of the host API's own routes (package hostapi serves them,
// package hostclient calls them); its other routes have the public API's
// paths. The tenant a call is for is the Kanga-Tenant header.
const (
	PathImageConfig = "/host/v1/imageconfig"
	// PathImage (DELETE ?ref=) removes the tenant's image; PathTenant
	// (DELETE) everything the host keeps of the tenant, which was
	// deleted.
	PathImage  = "/host/v1/image"
	PathTenant = "/host/v1/tenant"
	// PathCheckPorts answers hostcontract.PortChecker for the host.
	PathCheckPorts = "/host/v1/checkports"
	// PathPing answers 204: the control plane asks whether a host whose
	// lease lapsed still answers.
	PathPing = "/host/v1/ping"
	// PathVolumes: POST (a VolumeCreate) makes a persistent volume on
	// the host, DELETE ?id= removes one (hostcontract.VolumeHost).
	PathVolumes = "/host/v1/volumes"
	// PathMetrics serves the host's Prometheus metrics (the agent's
	// process registry), to the control plane's certificate like every
	// other route.
	PathMetrics = "/metrics"
	// PathDevices: POST (an api.DeviceRequest; answers the qualified
	// names attached) and DELETE ?name= attach devices to the tenant's
	// running instance {name} and detach them
	// (hostcontract.DeviceAttacher).
	PathDevices = "/host/v1/instances/{name}/devices"
)

// VolumeCreate is the body of POST PathVolumes. Key is an encrypted
// volume's key, which only the control plane keeps; it travels over the
// link's mutual TLS and the host does not store it.
type VolumeCreate struct {
	ID        string `json:"id"`
	Size      int64  `json:"size"`
	Encrypted bool   `json:"encrypted,omitempty"`
	Key       []byte `json:"key,omitempty"`
}

// VolumeKey is the answer to an agent's GET of a volume's key.
type VolumeKey struct {
	Key []byte `json:"key"`
}

// Paths of the server side.
const (
	PathJoin = "/hostlink/v1/join"
	PathHost = "/hostlink/v1/hosts/"
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

// WatchEvent is one line of the watch stream. The field names are those
// the stream has always had (an agent and a server of different versions
// read each other's lines).
type WatchEvent struct {
	// Instance is the new version, or on deletion the last version the
	// server knew (nil if none).
	Instance *api.Instance `json:"Instance"`
	Deleted  bool          `json:"Deleted"`
	Tenant   string        `json:"Tenant"`
	Name     string        `json:"Name"`
	// Revision is where a stream resumes after this event (the agent
	// sends the last one it saw as ?rev=).
	Revision int64 `json:"Revision"`
}

// Purge is a purge the host has not carried out yet (GET .../purges), and
// its acknowledgement (PUT .../purges).
type Purge struct {
	Tenant     string    `json:"tenant"`
	Image      string    `json:"image,omitempty"`
	At         time.Time `json:"at"`
	Generation int64     `json:"generation,omitempty"`
}

// InstanceFiles answers GET .../instances/{tenant}/{name}/files?uid=: the
// files of the instance's secret and config volumes and the env of its
// containers that take env from secrets (hostcontract.InstanceFiles).
type InstanceFiles struct {
	Volumes []VolumeFiles           `json:"volumes"`
	Env     map[string][]api.EnvVar `json:"env,omitempty"`
}

// VolumeFiles is one volume of InstanceFiles.
type VolumeFiles struct {
	Name   string `json:"name"`
	Secret bool   `json:"secret,omitempty"`
	Files  []File `json:"files"`
}

// File is one file of a VolumeFiles.
type File struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
	Data []byte `json:"data"`
}

// UsageRefusal names a usage record the server refused for good.
type UsageRefusal struct {
	Index  int    `json:"index"`
	Reason string `json:"reason"`
}

// PutUsageResponse answers a host's usage records.
type PutUsageResponse struct {
	Refused []UsageRefusal `json:"refused"`
}

// NetTenant and NetViewUpdate are the lines of the network view stream
// (GET .../netview).
type NetTenant struct {
	Name    string                  `json:"name"`
	Network api.TenantNetworkPolicy `json:"network"`
}

// NetViewUpdate: see hostcontract.NetUpdate.
type NetViewUpdate struct {
	Reset   bool              `json:"reset,omitempty"`
	Tenants []NetTenant       `json:"tenants"`
	Subnets []string          `json:"subnets"`
	Set     map[string]string `json:"set,omitempty"`
	Del     []string          `json:"del,omitempty"`
}

// ImageConfig answers the host API's image configuration route.
type ImageConfig struct {
	Entrypoint []string `json:"Entrypoint"`
	Cmd        []string `json:"Cmd"`
}

// WriteJSON answers v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers err as api.Error with the status of its class.
func WriteError(w http.ResponseWriter, err error) {
	code, status := errdefs.Code(err), errhttp.ToHTTP(err)
	WriteJSON(w, status, api.Error{Code: code, Message: err.Error()})
}

// ReadError rebuilds the error class of a non-2xx response.
func ReadError(resp *http.Response) error {
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

// DecodeBody reads a JSON request body of at most limit bytes into v;
// what names it in errors.
func DecodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any, what string) error {
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

func ValidHostName(n string) error {
	if n == "" || len(n) > 63 {
		return fmt.Errorf("host name %q must be 1 to 63 characters: %w", n, errdefs.ErrInvalidArgument)
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c >= 'A' && c <= 'Z' || c == '_') {
			return fmt.Errorf("host name %q: only letters, digits, '-', '_' and '.': %w", n, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// SplitURLs splits a comma-separated list of server URLs.
func SplitURLs(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimRight(strings.TrimSpace(u), "/"); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// HeartbeatIdle is how long a silent heartbeat stream is trusted; the
// server writes more often.
const HeartbeatIdle = 10 * time.Second
