package expansion

import "testing"

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "a", "B": "b$(A)", "EMPTY": ""}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	tests := []struct {
		in, full, partial string
	}{
		{"plain", "plain", "plain"},
		{"$(A)", "a", "a"},
		{"x-$(A)-$(A)-y", "x-a-a-y", "x-a-a-y"},
		{"$(B)", "b$(A)", "b$(A)"}, // values are not expanded again
		{"$(EMPTY)x", "x", "x"},
		{"$(MISSING)", "$(MISSING)", "$(MISSING)"},
		{"$$(A)", "$(A)", "$$(A)"},
		{"$$$(A)", "$a", "$$a"},
		{"$$", "$", "$$"},
		{"cost $5", "cost $5", "cost $5"},
		{"$", "$", "$"},
		{"end$", "end$", "end$"},
		{"$(A", "$(A", "$(A"},
		{"$()", "$()", "$()"},
		{"echo $HOME", "echo $HOME", "echo $HOME"},
	}
	for _, tt := range tests {
		if got := Expand(tt.in, lookup); got != tt.full {
			t.Errorf("Expand(%q) = %q, want %q", tt.in, got, tt.full)
		}
		if got := Partial(tt.in, lookup); got != tt.partial {
			t.Errorf("Partial(%q) = %q, want %q", tt.in, got, tt.partial)
		}
		// Two passes give what one pass with everything known gives.
		if got := Expand(Partial(tt.in, lookup), func(string) (string, bool) { return "", false }); got != tt.full {
			t.Errorf("Expand(Partial(%q)) = %q, want %q", tt.in, got, tt.full)
		}
	}
	if !Has("x $(POD_IP) y", "POD_IP") || Has("$$(POD_IP)", "POD_IP") || Has("$(A)", "POD_IP") {
		t.Error("Has: wrong answer")
	}
}
