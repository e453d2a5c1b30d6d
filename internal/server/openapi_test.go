package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// These tests keep api/openapi.yaml honest: it must be a valid document,
// describe exactly the routes the server serves, and describe the wire
// types as encoding/json produces them, in both directions.

func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPI)
	if err != nil {
		t.Fatalf("api/openapi.yaml does not load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("api/openapi.yaml is not a valid OpenAPI document: %v", err)
	}
	return doc
}

func TestOpenAPIValid(t *testing.T) {
	doc := loadOpenAPI(t)
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi version = %q, want 3.0.3", doc.OpenAPI)
	}
	if doc.Components == nil || doc.Components.SecuritySchemes["bearer"] == nil {
		t.Fatal("components.securitySchemes.bearer is missing")
	}
	if doc.Security == nil || len(doc.Security) != 1 || doc.Security[0]["bearer"] == nil {
		t.Errorf("global security = %v, want exactly [{bearer: []}]", doc.Security)
	}
}

type routeKey struct{ method, path string }

func (k routeKey) String() string { return k.method + " " + k.path }

func TestOpenAPIRoutes(t *testing.T) {
	doc := loadOpenAPI(t)

	inDoc := map[routeKey]*openapi3.Operation{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			inDoc[routeKey{method, path}] = op
		}
	}
	inCode := map[routeKey]Route{}
	for _, r := range Routes {
		k := routeKey{r.Method, r.Pattern}
		if _, dup := inCode[k]; dup {
			t.Errorf("server.Routes lists %s twice", k)
		}
		inCode[k] = r
	}

	var missingDoc, missingCode []string
	for k := range inCode {
		if _, ok := inDoc[k]; !ok {
			missingDoc = append(missingDoc, k.String())
		}
	}
	for k := range inDoc {
		if _, ok := inCode[k]; !ok {
			missingCode = append(missingCode, k.String())
		}
	}
	sort.Strings(missingDoc)
	sort.Strings(missingCode)
	for _, k := range missingDoc {
		t.Errorf("%s is in server.Routes but not in api/openapi.yaml: document it", k)
	}
	for _, k := range missingCode {
		t.Errorf("%s is in api/openapi.yaml but not in server.Routes: remove it or implement it", k)
	}

	for k, r := range inCode {
		op, ok := inDoc[k]
		if !ok {
			continue
		}
		// security: [] on the operation overrides the global bearer
		// requirement; it must say so exactly for the public routes.
		docPublic := op.Security != nil && len(*op.Security) == 0
		if docPublic != r.Public {
			t.Errorf("%s: Route.Public = %v, but the document's operation has security: [] = %v", k, r.Public, docPublic)
		}
		if op.Security != nil && len(*op.Security) > 0 {
			t.Errorf("%s: operation overrides security with %v; only public routes (security: []) may override it", k, *op.Security)
		}
		if !r.Public && op.Responses.Value("401") == nil {
			t.Errorf("%s: authenticated route does not document its 401 response", k)
		}
		if op.OperationID == "" {
			t.Errorf("%s: no operationId", k)
		}
	}
}

// schemaTypes maps every component schema to the Go type it describes.
var schemaTypes = map[string]any{
	"DeviceRequest":           api.DeviceRequest{},
	"HostDevice":              api.HostDevice{},
	"Instance":                api.Instance{},
	"InstanceSpec":            api.InstanceSpec{},
	"ContainerSpec":           api.ContainerSpec{},
	"SecurityContext":         api.SecurityContext{},
	"InstanceSecurityContext": api.InstanceSecurityContext{},
	"Capabilities":            api.Capabilities{},
	"SeccompProfile":          api.SeccompProfile{},
	"TenantSecurity":          api.TenantSecurity{},
	"EnvVar":                  api.EnvVar{},
	"Resources":               api.Resources{},
	"PortMapping":             api.PortMapping{},
	"InstanceStatus":          api.InstanceStatus{},
	"ContainerStatus":         api.ContainerStatus{},
	"Event":                   api.Event{},
	"EventRecord":             api.EventRecord{},
	"InstanceList":            api.InstanceList{},
	"CreateInstanceRequest":   api.CreateInstanceRequest{},
	"Image":                   api.Image{},
	"ImageList":               api.ImageList{},
	"ImageDetail":             api.ImageDetail{},
	"Process":                 api.Process{},
	"ProcessList":             api.ProcessList{},
	"ImageHost":               api.ImageHost{},
	"PullRequest":             api.PullRequest{},
	"PrewarmRequest":          api.PrewarmRequest{},
	"PrewarmResult":           api.PrewarmResult{},
	"PrewarmedHost":           api.PrewarmedHost{},
	"Progress":                api.Progress{},
	"Error":                   api.Error{},
	"ErrorResponse":           api.ErrorResponse{},
	"Version":                 api.Version{},
	"ExitStatus":              api.ExitStatus{},
	"TerminalSize":            api.TerminalSize{},
	"Tenant":                  api.Tenant{},
	"CreateTenantRequest":     api.CreateTenantRequest{},
	"CreateTenantResponse":    api.CreateTenantResponse{},
	"TenantList":              api.TenantList{},
	"Quota":                   api.Quota{},
	"QuotaAmounts":            api.QuotaAmounts{},
	"TenantQuota":             api.TenantQuota{},
	"TenantNetworkPolicy":     api.TenantNetworkPolicy{},
	"RuntimeClass":            api.RuntimeClass{},
	"RuntimeClassList":        api.RuntimeClassList{},
	"InstanceType":            api.InstanceType{},
	"InstanceTypeList":        api.InstanceTypeList{},
	"InstanceStats":           api.InstanceStats{},
	"SLAItem":                 api.SLAItem{},
	"SLAReport":               api.SLAReport{},
	"Host":                    api.Host{},
	"HostCapacity":            api.HostCapacity{},
	"HostImage":               api.HostImage{},
	"HostStatus":              api.HostStatus{},
	"HostList":                api.HostList{},
	"DrainReport":             api.DrainReport{},
	"DrainRemaining":          api.DrainRemaining{},
	"Probe":                   api.Probe{},
	"Lifecycle":               api.Lifecycle{},
	"LifecycleHandler":        api.LifecycleHandler{},
	"SleepAction":             api.SleepAction{},
	"ExecAction":              api.ExecAction{},
	"HTTPGetAction":           api.HTTPGetAction{},
	"HTTPHeader":              api.HTTPHeader{},
	"TCPSocketAction":         api.TCPSocketAction{},
	"GRPCAction":              api.GRPCAction{},
	"InstanceCondition":       api.InstanceCondition{},

	"Token":                   api.Token{},
	"CreateTokenRequest":      api.CreateTokenRequest{},
	"CreateTokenResponse":     api.CreateTokenResponse{},
	"TokenList":               api.TokenList{},
	"JoinToken":               api.JoinToken{},
	"CreateJoinTokenRequest":  api.CreateJoinTokenRequest{},
	"CreateJoinTokenResponse": api.CreateJoinTokenResponse{},
	"JoinTokenList":           api.JoinTokenList{},
	"HostRevocation":          api.HostRevocation{},
	"UsageItem":               api.UsageItem{},
	"UsageReport":             api.UsageReport{},
	"AuditRecord":             api.AuditRecord{},
	"AuditList":               api.AuditList{},
	"AuditVerification":       api.AuditVerification{},
	"AuditProblem":            api.AuditProblem{},
	"ObjectKey":               api.ObjectKey{},
	"ObjectData":              map[string][]byte{},
	"Secret":                  api.Secret{},
	"CreateSecretRequest":     api.CreateSecretRequest{},
	"UpdateSecretRequest":     api.UpdateSecretRequest{},
	"SecretList":              api.SecretList{},
	"SecretKeyRotation":       api.SecretKeyRotation{},
	"Config":                  api.Config{},
	"CreateConfigRequest":     api.CreateConfigRequest{},
	"UpdateConfigRequest":     api.UpdateConfigRequest{},
	"ConfigList":              api.ConfigList{},
	"CreateVolumeRequest":     api.CreateVolumeRequest{},
	"BoundVolume":             api.BoundVolume{},
	"PersistentVolume":        api.PersistentVolume{},
	"PersistentVolumeList":    api.PersistentVolumeList{},
	"PersistentVolumeStatus":  api.PersistentVolumeStatus{},
	"PersistentVolumeSource":  api.PersistentVolumeSource{},
	"Volume":                  api.Volume{},
	"ObjectVolumeSource":      api.ObjectVolumeSource{},
	"EmptyDirVolumeSource":    api.EmptyDirVolumeSource{},
	"StorageStats":            api.StorageStats{},
	"KeyToPath":               api.KeyToPath{},
	"VolumeMount":             api.VolumeMount{},
	"EnvFromSource":           api.EnvFromSource{},
	"ObjectRef":               api.ObjectRef{},
	"EnvVarSource":            api.EnvVarSource{},
	"KeySelector":             api.KeySelector{},
	"FieldRef":                api.FieldRef{},
	"ContainerStats":          api.ContainerStats{},
	"HostAlias":               api.HostAlias{},
	"DNSConfig":               api.DNSConfig{},
	"DNSOption":               api.DNSOption{},
}

var sampleTime = time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)

// typeValues give types with an enum a valid value.
var typeValues = map[reflect.Type]any{
	reflect.TypeFor[api.Phase]():          api.PhaseRunning,
	reflect.TypeFor[api.RestartPolicy]():  api.RestartOnFailure,
	reflect.TypeFor[api.ContainerState](): api.ContainerTerminated,
	reflect.TypeFor[time.Time]():          sampleTime,
}

// fieldValues give plain string fields that the document constrains a
// valid value, keyed by "Type.Field".
var fieldValues = map[string]any{
	"Event.Type":           "Warning",
	"PortMapping.Protocol": "udp",
	"PortMapping.HostIP":   "127.0.0.1",
	"Error.Code":           "NotFound",

	"Tenant.DefaultRuntime":                  "gvisor",
	"Tenant.AllowedRuntimes":                 []string{"gvisor"},
	"CreateTenantRequest.DefaultRuntime":     "gvisor",
	"CreateTenantRequest.AllowedRuntimes":    []string{"gvisor"},
	"RuntimeClass.Name":                      "enclave",
	"Resources.CPUPolicy":                    "dedicated",
	"InstanceSpec.SchedulingPolicy":          "spread",
	"Tenant.SchedulingPolicy":                "spread",
	"CreateTenantRequest.SchedulingPolicy":   "spread",
	"HostStatus.Phase":                       api.HostNotReady,
	"HostStatus.Condition":                   api.HostLeaseLapsed,
	"SeccompProfile.Type":                    api.SeccompUnconfined,
	"FieldRef.FieldPath":                     api.FieldPodIP,
	"InstanceSpec.DNSPolicy":                 api.DNSNone,
	"InstanceSpec.Hostname":                  "web-0",
	"HostAlias.IP":                           "10.0.0.1",
	"HostAlias.Hostnames":                    []string{"db.local"},
	"DNSConfig.Nameservers":                  []string{"10.0.0.53"},
	"DNSConfig.Searches":                     []string{"svc.local"},
	"HTTPGetAction.Scheme":                   api.URISchemeHTTPS,
	"InstanceCondition.Type":                 api.InstanceReady,
	"InstanceCondition.Status":               api.ConditionFalse,
	"ContainerSpec.TerminationMessagePolicy": api.TerminationMessageFallbackToLogsOnError,
}

// fill sets every field reachable from v to a non-zero value: pointers are
// allocated, slices get one element, so that no omitempty field is left
// out of the JSON.
func fill(t *testing.T, v reflect.Value) {
	t.Helper()
	if x, ok := typeValues[v.Type()]; ok {
		v.Set(reflect.ValueOf(x))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			if x, ok := fieldValues[v.Type().Name()+"."+f.Name]; ok {
				v.Field(i).Set(reflect.ValueOf(x).Convert(f.Type))
				continue
			}
			fill(t, v.Field(i))
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem())
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(t, v.Index(0))
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k := reflect.New(v.Type().Key()).Elem()
		e := reflect.New(v.Type().Elem()).Elem()
		fill(t, k)
		fill(t, e)
		v.SetMapIndex(k, e)
	case reflect.String:
		// Valid as a DNS label and as an environment variable name.
		v.SetString("a1")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1)
	default:
		t.Fatalf("fill: no sample value for %s", v.Type())
	}
}

type jsonField struct {
	typ       reflect.Type
	omitempty bool
}

// jsonFields returns a struct type's JSON field names, as encoding/json
// sees them.
func jsonFields(typ reflect.Type) map[string]jsonField {
	fields := map[string]jsonField{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					fields[k] = v
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = jsonField{typ: f.Type, omitempty: slices.Contains(strings.Split(opts, ","), "omitempty")}
	}
	return fields
}

// checkProperties reports properties of schema that typ has no JSON field
// for, required properties that typ may omit, and object schemas without
// additionalProperties: false. Inline object schemas are followed into the
// field's type; $refs are checked as components of their own.
func checkProperties(t *testing.T, where string, schema *openapi3.Schema, typ reflect.Type) {
	t.Helper()
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		typ = typ.Elem()
	}
	if schema.Type.Is(openapi3.TypeArray) && schema.Items != nil && schema.Items.Ref == "" {
		checkProperties(t, where+"[]", schema.Items.Value, typ)
		return
	}
	if !schema.Type.Is(openapi3.TypeObject) {
		return
	}
	// A Go map is an object whose additionalProperties describe the
	// values.
	if typ.Kind() == reflect.Map {
		if schema.AdditionalProperties.Schema == nil {
			t.Errorf("%s: object schema for Go map %s must describe its values in additionalProperties", where, typ)
			return
		}
		checkProperties(t, where+"{}", schema.AdditionalProperties.Schema.Value, typ.Elem())
		return
	}
	if schema.AdditionalProperties.Has == nil || *schema.AdditionalProperties.Has || schema.AdditionalProperties.Schema != nil {
		t.Errorf("%s: object schema must set additionalProperties: false, so that a Go field it lacks fails the test", where)
	}
	if typ.Kind() != reflect.Struct {
		t.Errorf("%s: object schema describes Go type %s, which is not a struct", where, typ)
		return
	}
	fields := jsonFields(typ)
	for name, prop := range schema.Properties {
		f, ok := fields[name]
		if !ok {
			t.Errorf("%s: property %q has no JSON field in Go type %s: remove it from the schema or add the field", where, name, typ)
			continue
		}
		if prop.Ref == "" {
			checkProperties(t, where+"."+name, prop.Value, f.typ)
		}
	}
	for _, name := range schema.Required {
		if f, ok := fields[name]; ok && f.omitempty {
			t.Errorf("%s: property %q is required, but Go type %s tags it omitempty, so responses may lack it", where, name, typ)
		}
	}
}

func TestOpenAPISchemas(t *testing.T) {
	doc := loadOpenAPI(t)
	schemas := doc.Components.Schemas

	for name := range schemas {
		if _, ok := schemaTypes[name]; !ok {
			t.Errorf("components.schemas.%s has no Go type in schemaTypes: add it to the test or remove the schema", name)
		}
	}
	for name, sample := range schemaTypes {
		t.Run(name, func(t *testing.T) {
			ref, ok := schemas[name]
			if !ok || ref.Value == nil {
				t.Fatalf("components.schemas.%s is missing for Go type %T", name, sample)
			}
			typ := reflect.TypeOf(sample)
			checkProperties(t, name, ref.Value, typ)

			v := reflect.New(typ).Elem()
			fill(t, v)
			b, err := json.Marshal(v.Interface())
			if err != nil {
				t.Fatal(err)
			}
			var decoded any
			if err := json.Unmarshal(b, &decoded); err != nil {
				t.Fatal(err)
			}
			if err := ref.Value.VisitJSON(decoded, openapi3.MultiErrors(), openapi3.EnableFormatValidation()); err != nil {
				t.Errorf("a fully populated %T does not match components.schemas.%s:\n%s\nJSON: %s", sample, name, err, b)
			}
		})
	}
}

// TestOpenAPISchemasRejectUnknown checks that the drift check above has
// teeth: a property the Go type lacks must fail validation.
func TestOpenAPISchemasRejectUnknown(t *testing.T) {
	doc := loadOpenAPI(t)
	v := map[string]any{"version": "v1", "tenant": "t", "bogus": true}
	if err := doc.Components.Schemas["Version"].Value.VisitJSON(v); err == nil {
		t.Error("Version schema accepted an unknown property; additionalProperties: false is not in effect")
	}
}

// enumValues returns the enum of a schema's property as strings.
func enumValues(t *testing.T, doc *openapi3.T, schema, prop string) []string {
	t.Helper()
	s := doc.Components.Schemas[schema]
	if s == nil || s.Value.Properties[prop] == nil {
		t.Fatalf("components.schemas.%s.properties.%s is missing", schema, prop)
	}
	var out []string
	for _, e := range s.Value.Properties[prop].Value.Enum {
		out = append(out, fmt.Sprint(e))
	}
	sort.Strings(out)
	return out
}

func TestOpenAPIEnums(t *testing.T) {
	doc := loadOpenAPI(t)

	// Every error class errdefs can produce, as the server maps it.
	var codes []string
	for _, err := range []error{
		errdefs.ErrInvalidArgument, errdefs.ErrNotFound, errdefs.ErrAlreadyExists,
		errdefs.ErrConflict, errdefs.ErrFailedPrecondition, errdefs.ErrUnauthenticated,
		errdefs.ErrPermissionDenied, errdefs.ErrUnavailable, errdefs.ErrNotImplemented,
		errdefs.ErrTooLarge, errdefs.ErrMethodNotAllowed,
		context.DeadlineExceeded, context.Canceled, errors.New("anything else"),
	} {
		code := errdefs.Code(err)
		codes = append(codes, code)
	}

	tests := []struct {
		schema, prop string
		want         []string
	}{
		{"InstanceStatus", "phase", []string{
			string(api.PhasePending), string(api.PhaseCreating), string(api.PhaseRunning),
			string(api.PhaseSucceeded), string(api.PhaseFailed)}},
		{"InstanceSpec", "restartPolicy", []string{
			string(api.RestartNever), string(api.RestartOnFailure), string(api.RestartAlways)}},
		{"ContainerStatus", "state", []string{
			string(api.ContainerWaiting), string(api.ContainerRunning), string(api.ContainerTerminated)}},
		{"Error", "code", codes},
		{"HostStatus", "phase", []string{api.HostReady, api.HostNotReady}},
		{"HostStatus", "condition", []string{api.HostLeaseLapsed, api.HostLost, api.HostSafetyBrake}},
		{"SeccompProfile", "type", []string{api.SeccompRuntimeDefault, api.SeccompUnconfined}},
		{"FieldRef", "fieldPath", []string{api.FieldPodIP, api.FieldPodIPs}},
		{"InstanceSpec", "dnsPolicy", []string{api.DNSDefault, api.DNSNone}},
		{"HTTPGetAction", "scheme", []string{api.URISchemeHTTP, api.URISchemeHTTPS}},
		{"InstanceCondition", "type", []string{api.InstanceReady}},
		{"InstanceCondition", "status", []string{api.ConditionTrue, api.ConditionFalse}},
	}
	for _, tt := range tests {
		t.Run(tt.schema+"."+tt.prop, func(t *testing.T) {
			want := slices.Clone(tt.want)
			sort.Strings(want)
			want = slices.Compact(want)
			if got := enumValues(t, doc, tt.schema, tt.prop); !slices.Equal(got, want) {
				t.Errorf("enum of %s.%s = %v, want the Go constants %v", tt.schema, tt.prop, got, want)
			}
		})
	}

	// The frame protocol the exec operation requires is the one the
	// server speaks.
	exec := doc.Paths.Find("/v1/instances/{name}/exec").Post
	p := exec.Parameters.GetByInAndName(openapi3.ParameterInHeader, "Upgrade")
	if p == nil || len(p.Schema.Value.Enum) != 1 || p.Schema.Value.Enum[0] != api.StreamProtocol {
		t.Errorf("exec's Upgrade header must be exactly %q", api.StreamProtocol)
	}
}
