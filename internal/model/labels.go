package model

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kanga-run/kanga/errdefs"
)

// Caps on an instance's labels and annotations. Kubernetes caps each
// label key (253+63 bytes) and value (63) and annotations at 256 KiB in
// total; Kanga keeps a record small enough to list often: at most
// MaxLabels labels, and annotations of MaxAnnotationBytes in total (keys
// and values).
const (
	MaxLabels          = 64
	MaxAnnotationBytes = 64 << 10
)

// ValidateLabels checks an instance's labels as Kubernetes does: each key
// a qualified name with an optional DNS-subdomain prefix (app,
// example.com/tier), each value at most 63 of [A-Za-z0-9-_.] starting and
// ending alphanumeric, or empty. Every error names the key.
func ValidateLabels(field string, l map[string]string) error {
	if len(l) > MaxLabels {
		return invalid("%s has %d labels, at most %d", field, len(l), MaxLabels)
	}
	var errs []error
	for _, k := range sortedKeys(l) {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			errs = append(errs, invalid("%s key %q: %s", field, k, strings.Join(msgs, "; ")))
			continue
		}
		if msgs := validation.IsValidLabelValue(l[k]); len(msgs) > 0 {
			errs = append(errs, invalid("%s[%q] value %q: %s", field, k, truncate(l[k]), strings.Join(msgs, "; ")))
		}
	}
	return errors.Join(errs...)
}

// ValidateAnnotations checks an instance's annotations: keys as label
// keys, values free text, MaxAnnotationBytes in all.
func ValidateAnnotations(field string, a map[string]string) error {
	var errs []error
	total := 0
	for _, k := range sortedKeys(a) {
		total += len(k) + len(a[k])
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			errs = append(errs, invalid("%s key %q: %s", field, truncate(k), strings.Join(msgs, "; ")))
		}
	}
	if total > MaxAnnotationBytes {
		errs = append(errs, invalid("%s take %d bytes, at most %d in all", field, total, MaxAnnotationBytes))
	}
	return errors.Join(errs...)
}

// ParseLabelSelector parses a Kubernetes label selector: app=web,
// tier!=db, env in (a,b), env notin (c), key, !key. Empty selects
// everything.
func ParseLabelSelector(field, s string) (labels.Selector, error) {
	sel, err := labels.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %v: %w", field, truncate(s), err, errdefs.ErrInvalidArgument)
	}
	return sel, nil
}

// MatchLabels reports whether labels l are selected by sel (nil selects
// everything).
func MatchLabels(sel labels.Selector, l map[string]string) bool {
	return sel == nil || sel.Matches(labels.Set(l))
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
