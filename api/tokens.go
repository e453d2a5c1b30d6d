package api

import "time"

// HeaderRequestID carries the ID the server gives every request. It comes
// back on every response, names the request in the server's log lines and
// the audit log, and goes along to the host for host-side logs (exec,
// logs), so that one ID ties them together.
const HeaderRequestID = "Kanga-Request-Id"

// Scopes a token may hold. A request needs the scope of its route (see
// README, "Tokens and scopes"); a token lacking it gets 403 naming it.
const (
	ScopeInstancesRead  = "instances:read"  // list, inspect, wait, logs, stats, SLA
	ScopeInstancesWrite = "instances:write" // run, stop, rm
	ScopeExec           = "exec"            // exec into instances
	ScopeImagesRead     = "images:read"     // image ls, image inspect
	ScopeImagesWrite    = "images:write"    // import, pull, prewarm, rm
	ScopeUsageRead      = "usage:read"      // the tenant's metered usage
	ScopeTokensRead     = "tokens:read"     // list the tenant's tokens
	ScopeTokensWrite    = "tokens:write"    // create and revoke the tenant's tokens
	ScopeSecretsRead    = "secrets:read"    // list and inspect secrets: keys and sizes, never values
	ScopeSecretsWrite   = "secrets:write"   // create, update and remove secrets
	ScopeSecretsReveal  = "secrets:reveal"  // read secrets' values (inspect --reveal)
	ScopeConfigsRead    = "configs:read"    // list and inspect configs, with their data
	ScopeConfigsWrite   = "configs:write"   // create, update and remove configs
	ScopeVolumesRead    = "volumes:read"    // list and inspect persistent volumes
	ScopeVolumesWrite   = "volumes:write"   // create and remove persistent volumes

	// Administrator scopes: only an administrator's token can hand them on.
	ScopeTenantsAdmin = "tenants:admin" // manage tenants, act in and read any tenant
	ScopeHostsRead    = "hosts:read"    // list and inspect hosts
	ScopeHostsWrite   = "hosts:write"   // cordon, drain, join tokens, revoke hosts
	ScopeAuditRead    = "audit:read"    // read and verify the audit log
	// ScopeMetricsRead reads /metrics: platform-wide figures that name
	// every tenant's instances, so never a tenant's.
	ScopeMetricsRead = "metrics:read"

	// ScopeAll is every scope a tenant can hold (none of the
	// administrator's), including those added in later versions: a
	// tenant's first token has it.
	ScopeAll = "all"
	// ScopeEverything is every scope, the administrator's included: the
	// token kanga up and kanga server write has it.
	ScopeEverything = "*"
	// ScopeReadOnly, given at creation, stands for every :read scope the
	// creator holds.
	ScopeReadOnly = "read-only"
)

// TenantScopes are the scopes ScopeAll stands for.
var TenantScopes = []string{
	ScopeInstancesRead, ScopeInstancesWrite, ScopeExec, ScopeImagesRead, ScopeImagesWrite,
	ScopeUsageRead, ScopeTokensRead, ScopeTokensWrite,
	ScopeSecretsRead, ScopeSecretsWrite, ScopeSecretsReveal, ScopeConfigsRead, ScopeConfigsWrite,
	ScopeVolumesRead, ScopeVolumesWrite,
}

// AdminScopes are the scopes only an administrator holds.
var AdminScopes = []string{ScopeTenantsAdmin, ScopeHostsRead, ScopeHostsWrite, ScopeAuditRead, ScopeMetricsRead}

// Token describes a bearer token; its secret is shown once, at creation,
// and stored only as a hash.
type Token struct {
	// ID names the token in listings, revocations and the audit log. It
	// is not a credential.
	ID     string   `json:"id"`
	Name   string   `json:"name,omitempty"`
	Tenant string   `json:"tenant"`
	Scopes []string `json:"scopes"`
	// CreatedBy is the ID of the token that created this one.
	CreatedBy string     `json:"createdBy,omitempty"`
	CreatedAt *time.Time `json:"createdAt,omitempty"`
	// ExpiresAt, if set, is when the token stops working (401).
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

// CreateTokenRequest is the body of POST /v1/tokens. The token belongs to
// the tenant the request acts in.
type CreateTokenRequest struct {
	Name string `json:"name,omitempty"`
	// Scopes default to the creator's own; a token is never given a scope
	// its creator lacks.
	Scopes []string `json:"scopes,omitempty"`
	// Expires is a lifetime such as "24h", "90m" or "30d"; empty: no
	// expiry, or the creator's if it expires.
	Expires string `json:"expires,omitempty"`
}

// CreateTokenResponse carries the new token's secret, shown only once.
type CreateTokenResponse struct {
	Token  Token  `json:"token"`
	Secret string `json:"secret"`
}

// TokenList is the body of GET /v1/tokens.
type TokenList struct {
	Items []Token `json:"items"`
}

// JoinToken describes a join token bound to one host name: an agent that
// presents it may join the pool as that host, and as no other.
type JoinToken struct {
	ID        string     `json:"id"`
	Host      string     `json:"host"`
	CreatedBy string     `json:"createdBy,omitempty"`
	CreatedAt time.Time  `json:"createdAt"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	// Joins counts the certificates issued with the token.
	Joins int `json:"joins"`
}

// CreateJoinTokenRequest is the body of POST /v1/join-tokens.
type CreateJoinTokenRequest struct {
	Host string `json:"host"`
	// Expires is how long the token may be used to join ("24h", "7d");
	// default 24h, "0" for no expiry.
	Expires string `json:"expires,omitempty"`
}

// CreateJoinTokenResponse carries the join token, shown only once.
type CreateJoinTokenResponse struct {
	JoinToken JoinToken `json:"joinToken"`
	// Token is what kanga agent --token takes.
	Token string `json:"token"`
}

// JoinTokenList is the body of GET /v1/join-tokens.
type JoinTokenList struct {
	Items []JoinToken `json:"items"`
}

// HostRevocation reports what POST /v1/hosts/{name}/revoke revoked.
type HostRevocation struct {
	Host string `json:"host"`
	// JoinTokens are the IDs of the host's join tokens deleted.
	JoinTokens []string `json:"joinTokens"`
	// Certificates are the serial numbers (hex) of the host's agent
	// certificates that the agent link now refuses.
	Certificates []string `json:"certificates"`
}

// AuditRecord is one entry of the audit log: a mutating API call, or an
// exec. Records form a hash chain: each carries the hash of the one
// before, so that an altered, removed or inserted record is found by
// verification. No secret (token, env value, request body) is recorded.
type AuditRecord struct {
	Seq       int64     `json:"seq"`
	Time      time.Time `json:"time"`
	RequestID string    `json:"requestId"`
	// Replica is the control-plane replica that served the request.
	Replica string `json:"replica,omitempty"`
	// Principal is the ID of the token (never its secret); empty when the
	// request carried no valid token.
	Principal     string `json:"principal,omitempty"`
	PrincipalName string `json:"principalName,omitempty"`
	// Tenant is the tenant the request acted in.
	Tenant string `json:"tenant,omitempty"`
	// Verb is what was done, such as instances.create or tokens.revoke.
	Verb   string `json:"verb"`
	Object string `json:"object,omitempty"`
	Method string `json:"method"`
	Path   string `json:"path"`
	// Status is the HTTP status of the answer.
	Status int `json:"status"`
	// Detail adds what the path does not say (exec: the program and TTY).
	Detail   string `json:"detail,omitempty"`
	Remote   string `json:"remote,omitempty"`
	PrevHash string `json:"prevHash"`
	Hash     string `json:"hash"`
}

// AuditList is the body of GET /v1/audit.
type AuditList struct {
	Items []AuditRecord `json:"items"`
	// Verification is set when the request asked for it.
	Verification *AuditVerification `json:"verification,omitempty"`
}

// AuditVerification is the result of checking the whole chain.
type AuditVerification struct {
	OK bool `json:"ok"`
	// Records is how many records were checked.
	Records  int64          `json:"records"`
	Problems []AuditProblem `json:"problems"`
}

// AuditProblem names a record that fails verification.
type AuditProblem struct {
	Seq     int64  `json:"seq"`
	Problem string `json:"problem"`
}
