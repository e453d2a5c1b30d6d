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
	// Host is refused in a probe, which only ever reaches its own
	// instance (set a Host header in HTTPHeaders for virtual hosting). In
	// a lifecycle hook it may be an IP address, dialled from inside the
	// instance's network: the hook reaches what the instance could.
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

// Lifecycle are a container's hooks, as in Kubernetes. PostStart runs
// right after the container's process started: the container is not
// ready, and its probes wait, until it completes; if it fails the
// container is stopped (event FailedPostStartHook) and restarted per the
// restart policy. PreStop runs when the container is stopped (a stop or
// delete, the instance's deadline, a failed liveness or startup probe),
// before its stop signal, within the stop's grace period; its failure is
// an event (FailedPreStopHook) and the stop goes on. Hooks run in the
// container (exec) or from inside the instance's network (httpGet).
type Lifecycle struct {
	PostStart *LifecycleHandler `json:"postStart,omitempty"`
	PreStop   *LifecycleHandler `json:"preStop,omitempty"`
}

// LifecycleHandler is one hook: exactly one of Exec, HTTPGet and Sleep.
// An exec hook's exit status 0 and an HTTP status from 200 to 399 are
// success.
type LifecycleHandler struct {
	Exec    *ExecAction    `json:"exec,omitempty"`
	HTTPGet *HTTPGetAction `json:"httpGet,omitempty"`
	Sleep   *SleepAction   `json:"sleep,omitempty"`
}

// SleepAction waits, e.g. for load balancers to take a stopping
// instance out before it gets its stop signal.
type SleepAction struct {
	// Seconds is 0 to 3600.
	Seconds int64 `json:"seconds"`
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
