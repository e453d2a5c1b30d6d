package model

import (
	"errors"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/errdefs"
)

func TestValidateLabels(t *testing.T) {
	many := map[string]string{}
	for i := range MaxLabels + 1 {
		many["k"+strings.Repeat("x", i%10)+string(rune('a'+i%26))+strings.Repeat("y", i/26)] = "v"
	}
	for _, tc := range []struct {
		name string
		l    map[string]string
		want string // empty: valid
	}{
		{"none", nil, ""},
		{"plain and prefixed", map[string]string{"app": "web", "example.com/tier": "front-1", "empty": ""}, ""},
		{"bad key", map[string]string{"bad key": "v"}, `labels key "bad key"`},
		{"bad prefix", map[string]string{"-x.com/a": "v"}, `labels key "-x.com/a"`},
		{"key too long", map[string]string{strings.Repeat("a", 64): "v"}, "labels key"},
		{"bad value", map[string]string{"app": "we b"}, `labels["app"] value "we b"`},
		{"value too long", map[string]string{"app": strings.Repeat("v", 64)}, `labels["app"] value`},
		{"too many", many, "at most 64"},
	} {
		err := ValidateLabels("labels", tc.l)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an invalid argument with %q", tc.name, err, tc.want)
		}
	}
}

func TestValidateAnnotations(t *testing.T) {
	if err := ValidateAnnotations("annotations", map[string]string{"example.com/note": "any text, even spaces\n"}); err != nil {
		t.Errorf("valid annotation refused: %v", err)
	}
	if err := ValidateAnnotations("annotations", map[string]string{"a b": "x"}); err == nil || !strings.Contains(err.Error(), `annotations key "a b"`) {
		t.Errorf("bad key: %v", err)
	}
	big := map[string]string{"a": strings.Repeat("x", MaxAnnotationBytes)}
	if err := ValidateAnnotations("annotations", big); err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "at most 65536") {
		t.Errorf("too big: %v", err)
	}
}

func TestLabelSelector(t *testing.T) {
	web := map[string]string{"app": "web", "tier": "front"}
	db := map[string]string{"app": "db", "tier": "db"}
	for _, tc := range []struct {
		sel     string
		web, db bool
	}{
		{"", true, true},
		{"app=web", true, false},
		{"app==web", true, false},
		{"tier!=db", true, false},
		{"app in (web,db)", true, true},
		{"app notin (web)", false, true},
		{"tier", true, true},
		{"!tier", false, false},
		{"app=web,tier!=front", false, false},
	} {
		sel, err := ParseLabelSelector("labelSelector", tc.sel)
		if err != nil {
			t.Fatalf("%q: %v", tc.sel, err)
		}
		if got := MatchLabels(sel, web); got != tc.web {
			t.Errorf("%q on web = %v", tc.sel, got)
		}
		if got := MatchLabels(sel, db); got != tc.db {
			t.Errorf("%q on db = %v", tc.sel, got)
		}
		if !tc.web && MatchLabels(sel, nil) && tc.sel != "!tier" && strings.HasPrefix(tc.sel, "app=") {
			t.Errorf("%q matches an instance without labels", tc.sel)
		}
	}
	for _, bad := range []string{"app=(", "a b=c", "app in web"} {
		if _, err := ParseLabelSelector("labelSelector", bad); err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "labelSelector") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
