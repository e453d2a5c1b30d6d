package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
)

// The list is assembled from cached item encodings; it must be the
// document writeJSON writes, byte for byte.
func TestEncodeListIsWriteJSON(t *testing.T) {
	inst := func(name string) api.Instance {
		return api.Instance{Name: name, Tenant: "t", Labels: map[string]string{"app": "<web>&"},
			CreatedAt: testNow, Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "main", Image: imgBusybox}}}}
	}
	tests := []struct {
		name  string
		items []api.Instance
		cont  string
	}{
		{"empty", nil, ""},
		{"one", []api.Instance{inst("a")}, ""},
		{"three with continue", []api.Instance{inst("a"), inst("b"), inst("c")}, "eyJ2IjoxfQ"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var listed []*listedInstance
			for i := range tt.items {
				item, err := json.MarshalIndent(&tt.items[i], "    ", "  ")
				if err != nil {
					t.Fatal(err)
				}
				listed = append(listed, &listedInstance{inst: &tt.items[i], item: item})
			}
			rec := httptest.NewRecorder()
			items := tt.items
			if items == nil {
				items = []api.Instance{}
			}
			writeJSON(rec, http.StatusOK, api.InstanceList{Items: items, Continue: tt.cont})
			if got, want := string(encodeList(new(bytes.Buffer), listed, tt.cont)), rec.Body.String(); got != want {
				t.Errorf("encodeList =\n%s\nwriteJSON =\n%s", got, want)
			}
		})
	}
}

func listPage(t *testing.T, e *testEnv, tn testTenant, query string) (api.InstanceList, []string) {
	t.Helper()
	r := e.do(t, "GET", "/v1/instances?"+query, tn.token, "")
	wantStatus(t, r, http.StatusOK)
	var l api.InstanceList
	decode(t, r, &l)
	var names []string
	for _, i := range l.Items {
		names = append(names, i.Name)
	}
	return l, names
}

func TestListInstancesPages(t *testing.T) {
	e := newEnv(t, 0)
	var want []string
	for i := range 7 {
		name := fmt.Sprintf("p%d", i)
		e.mustCreate(t, e.a, name)
		want = append(want, name)
	}
	_, all := listPage(t, e, e.a, "")
	if !slices.Equal(all, want) {
		t.Fatalf("unpaged list = %v, want %v", all, want)
	}

	// Pages of 3 of one snapshot: what changes after the first page does
	// not show on the next ones.
	first, names := listPage(t, e, e.a, "limit=3")
	if !slices.Equal(names, want[:3]) || first.Continue == "" {
		t.Fatalf("first page = %v continue %q, want %v and a continue", names, first.Continue, want[:3])
	}
	e.mustCreate(t, e.a, "p7")
	if _, err := e.store.UpdateInstance(e.a.ctx, "p4", func(i *api.Instance) error {
		i.Labels = map[string]string{"changed": "yes"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	second, names := listPage(t, e, e.a, "limit=3&continue="+url.QueryEscape(first.Continue))
	if !slices.Equal(names, want[3:6]) || second.Continue == "" {
		t.Fatalf("second page = %v continue %q, want %v and a continue", names, second.Continue, want[3:6])
	}
	if second.Items[1].Labels["changed"] != "" {
		t.Errorf("second page shows p4 changed after the first page: %v", second.Items[1].Labels)
	}
	last, names := listPage(t, e, e.a, "limit=3&continue="+url.QueryEscape(second.Continue))
	if !slices.Equal(names, want[6:]) || last.Continue != "" {
		t.Fatalf("last page = %v continue %q, want %v and no continue", names, last.Continue, want[6:])
	}

	// A new listing sees the change, from the cache or not.
	now, names := listPage(t, e, e.a, "")
	if !slices.Equal(names, append(slices.Clone(want), "p7")) || now.Items[4].Labels["changed"] != "yes" {
		t.Errorf("list after the changes = %v (p4 labels %v)", names, now.Items[4].Labels)
	}
	if err := e.store.DeleteInstance(e.a.ctx, "p0"); err != nil {
		t.Fatal(err)
	}
	if _, names = listPage(t, e, e.a, ""); slices.Contains(names, "p0") {
		t.Errorf("list after deleting p0 = %v", names)
	}

	// The SDK follows the pages.
	c, err := client.New(e.url, e.a.token)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	opts := client.ListOptions{Limit: 2}
	for pages := 0; ; pages++ {
		p, err := c.ListInstancesPage(t.Context(), opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range p.Items {
			got = append(got, i.Name)
		}
		if p.Continue == "" {
			if pages != 3 {
				t.Errorf("%d pages of 2 for 7 instances, want 4", pages+1)
			}
			break
		}
		opts.Continue = p.Continue
	}
	if !slices.Equal(got, names) {
		t.Errorf("SDK pages = %v, want %v", got, names)
	}
}

func TestListInstancesRefusesBadPaging(t *testing.T) {
	e := newEnv(t, 0)
	for i := range 3 {
		e.mustCreate(t, e.a, fmt.Sprintf("q%d", i))
		e.mustCreate(t, e.b, fmt.Sprintf("secret%d", i))
	}
	first, _ := listPage(t, e, e.a, "limit=1&labelSelector=app!%3Dx")
	raw, err := base64.RawURLEncoding.DecodeString(first.Continue)
	if err != nil {
		t.Fatal(err)
	}
	var lc listContinue
	if err := json.Unmarshal(raw, &lc); err != nil {
		t.Fatal(err)
	}
	lc.Tenant = e.b.name
	forged := lc.encode()

	tests := []struct {
		name, token, query, msg string
	}{
		{"limit zero", e.a.token, "limit=0", "limit"},
		{"limit negative", e.a.token, "limit=-1", "limit"},
		{"limit not a number", e.a.token, "limit=ten", "limit"},
		{"limit too large", e.a.token, "limit=10001", "limit"},
		{"continue not base64", e.a.token, "continue=%25%25", "continue"},
		{"continue not json", e.a.token, "continue=" + base64.RawURLEncoding.EncodeToString([]byte("nope")), "continue"},
		{"continue of another selector", e.a.token, "continue=" + first.Continue, "labelSelector"},
		{"continue used by another tenant", e.b.token, "limit=1&labelSelector=app!%3Dx&continue=" + first.Continue, "another tenant"},
		{"continue edited to another tenant", e.a.token, "limit=1&labelSelector=app!%3Dx&continue=" + forged, "another tenant"},
		{"continue edited, used by that tenant's caller", e.b.token, "limit=1&labelSelector=app!%3Dx&continue=" + forged, "labelSelector"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, "GET", "/v1/instances?"+tt.query, tt.token, "")
			if tt.name == "continue edited, used by that tenant's caller" {
				// The edited token names B, and B's caller lists B's own
				// instances: nothing of A's reaches B.
				if r.status == http.StatusOK {
					var l api.InstanceList
					decode(t, r, &l)
					for _, i := range l.Items {
						if i.Tenant != e.b.name {
							t.Errorf("B's list holds %s of tenant %s", i.Name, i.Tenant)
						}
					}
				}
				return
			}
			wantError(t, r, http.StatusBadRequest, "InvalidArgument", tt.msg)
		})
	}
}

// A read that starts after a caller arrived answers it; a read already
// under way when it arrived does not (it may miss a write the caller saw
// finish).
func TestCoalescerJoinsOnlyReadsNotStarted(t *testing.T) {
	var c coalescer[int]
	var calls atomic.Int32
	entered := make(chan struct{}, 2)
	release := make(chan struct{})
	fn := func(context.Context) (int, error) {
		n := int(calls.Add(1))
		entered <- struct{}{}
		<-release
		return n, nil
	}
	results := make([]int, 3)
	var wg sync.WaitGroup
	call := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := c.do(t.Context(), "k", fn)
			if err != nil {
				t.Error(err)
			}
			results[i] = v
		}()
	}
	call(0)
	<-entered // the first read is under way
	call(1)
	call(2)
	// Wait until both later callers hold the gathering batch.
	for {
		c.mu.Lock()
		k := c.keys["k"]
		gathered := k != nil && k.next != nil && k.next.callers == 2
		c.mu.Unlock()
		if gathered {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if calls.Load() != 2 {
		t.Errorf("fn ran %d times, want 2", calls.Load())
	}
	if results[0] != 1 || results[1] != 2 || results[2] != 2 {
		t.Errorf("results = %v, want [1 2 2]", results)
	}
}
