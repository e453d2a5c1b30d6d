package api

import "time"

// Probe is a periodic check of a container, shaped as Kubernetes' Probe:
// exactly one handler (exec, httpGet, tcpSocket or grpc) and its timing.
// A zero timing field takes Kubernetes' default (see the fields). Network
// probes are made from inside the instance's own network namespace, to
// the instance's address: they reach nothing the instance could not.
type Probe struct {
	Exec      *ExecAction      `json:"exec,omitempty"`
	HTTPGet   *HTTPGetAction   `json:"httpGet,omitempty"`
	TCPSocket *TCPSocketAction `json:"tcpSocket,omitempty"`
	GRPC      *GRPCAction      `json:"grpc,omitempty"`
	// InitialDelaySeconds is how long after the container starts the
	// first check waits (default 0).
	InitialDelaySeconds int `json:"initialDelaySeconds,omitempty"`
	// PeriodSeconds is the time between checks (default 10, at least 1).
	PeriodSeconds int `json:"periodSeconds,omitempty"`
	// TimeoutSeconds bounds one check (default 1, at least 1).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
	// SuccessThreshold is how many successes in a row make a failed
	// probe pass again (default 1; must be 1 for liveness and startup).
	SuccessThreshold int `json:"successThreshold,omitempty"`
	// FailureThreshold is how many failures in a row make the probe fail
	// (default 3).
	FailureThreshold int `json:"failureThreshold,omitempty"`
}

// ExecAction runs a command in the container; exit status 0 is healthy.
type ExecAction struct {
	Command []string `json:"command"`
}

// HTTPGetAction sends a GET to the instance; a status from 200 to 399 is
// healthy. The host is always the instance's own address.
type HTTPGetAction struct {
	// Path defaults to "/".
	Path string `json:"path,omitempty"`
	Port int    `json:"port"`
	// Host is refused: a probe only ever reaches its own instance (set a
	// Host header in HTTPHeaders for virtual hosting).
	Host string `json:"host,omitempty"`
	// Scheme is HTTP (the default) or HTTPS; HTTPS does not verify the
	// certificate, as in Kubernetes.
	Scheme      string       `json:"scheme,omitempty"`
	HTTPHeaders []HTTPHeader `json:"httpHeaders,omitempty"`
}

// HTTPHeader is one header of an HTTPGetAction.
type HTTPHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// TCPSocketAction opens a TCP connection to the instance's port; a
// connection is healthy.
type TCPSocketAction struct {
	Port int `json:"port"`
	// Host is refused, as in HTTPGetAction.
	Host string `json:"host,omitempty"`
}

// GRPCAction calls the standard gRPC health service
// (grpc.health.v1.Health/Check) on the instance's port; SERVING is healthy.
type GRPCAction struct {
	Port int `json:"port"`
	// Service is the service name sent in the check (default "").
	Service *string `json:"service,omitempty"`
}

// Probe schemes.
const (
	URISchemeHTTP  = "HTTP"
	URISchemeHTTPS = "HTTPS"
)

// Condition types of an instance.
const (
	// InstanceReady is True when every container of the instance is
	// ready: running, started (startup probe) and passing its readiness
	// probe.
	InstanceReady = "Ready"
)

// Condition statuses.
const (
	ConditionTrue  = "True"
	ConditionFalse = "False"
)

// InstanceCondition is one condition of an instance, shaped as a
// Kubernetes pod condition.
type InstanceCondition struct {
	Type   string `json:"type"`
	Status string `json:"status"`
	// Reason is a CamelCase word; Message says more, e.g. which
	// containers are not ready.
	Reason             string    `json:"reason,omitempty"`
	Message            string    `json:"message,omitempty"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}
