package server

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// maxListLimit bounds the limit query parameter of lists.
const maxListLimit = 10000

// listedInstance is what a list needs of one stored version of an
// instance: decoding and encoding 100 instances is most of a list's cost,
// and under concurrent lists of the same tenant that cost was paid again
// by every request, for instances that had not changed.
type listedInstance struct {
	rev  int64
	inst *api.Instance // shared: read only
	// item is the instance encoded as an element of a list document
	// (indented as writeJSON indents it there).
	item []byte
}

// listCache keeps, per tenant, the listed form of the instances' current
// versions, keyed by name; an entry is good while its revision is the
// stored one.
type listCache struct {
	mu      sync.Mutex
	tenants map[string]map[string]*listedInstance
}

// listed returns the listed form of recs, decoding only the versions it
// has not seen. current says recs is the tenant's whole current list:
// the tenant's entries are then pruned to it, so deleted instances do not
// stay.
func (c *listCache) listed(tn string, recs []store.InstanceRecord, current bool) ([]*listedInstance, error) {
	out := make([]*listedInstance, len(recs))
	var miss []int
	c.mu.Lock()
	m := c.tenants[tn]
	for i, r := range recs {
		if e := m[r.Name]; e != nil && e.rev == r.ModRevision {
			out[i] = e
		} else {
			miss = append(miss, i)
		}
	}
	c.mu.Unlock()
	if len(miss) == 0 && (!current || len(m) == len(recs)) {
		return out, nil
	}
	for _, i := range miss {
		var inst api.Instance
		if err := json.Unmarshal(recs[i].Value, &inst); err != nil {
			return nil, fmt.Errorf("decode stored instance %q: %w", recs[i].Name, err)
		}
		item, err := json.MarshalIndent(&inst, "    ", "  ")
		if err != nil {
			return nil, fmt.Errorf("encode instance %q: %w", recs[i].Name, err)
		}
		out[i] = &listedInstance{rev: recs[i].ModRevision, inst: &inst, item: item}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tenants == nil {
		c.tenants = map[string]map[string]*listedInstance{}
	}
	m = c.tenants[tn]
	if current {
		// Rebuilt from this list: what it does not hold is deleted.
		fresh := make(map[string]*listedInstance, len(recs))
		for i, r := range recs {
			e := out[i]
			if old := m[r.Name]; old != nil && old.rev > e.rev {
				e = old // a concurrent list read a newer version
			}
			fresh[r.Name] = e
		}
		if len(fresh) == 0 {
			delete(c.tenants, tn)
		} else {
			c.tenants[tn] = fresh
		}
		return out, nil
	}
	if m == nil {
		m = map[string]*listedInstance{}
		c.tenants[tn] = m
	}
	for _, i := range miss {
		if old := m[recs[i].Name]; old == nil || old.rev < out[i].rev {
			m[recs[i].Name] = out[i]
		}
	}
	return out, nil
}

// listContinue is the position a continue token carries: the snapshot
// the first page read and the last instance returned. It is not secret
// and needs no signature: the tenant listed is always the caller's (a
// token naming another is refused), so an edited token can only move
// within what the caller may read anyway.
type listContinue struct {
	V        int       `json:"v"`
	Tenant   string    `json:"t"`
	Selector string    `json:"s,omitempty"`
	Rev      int64     `json:"r"`
	Created  time.Time `json:"c"`
	Name     string    `json:"n"`
}

func (lc listContinue) encode() string {
	b, _ := json.Marshal(lc)
	return base64.RawURLEncoding.EncodeToString(b)
}

func parseContinue(tok, tn, selector string) (listContinue, error) {
	bad := func(why string) error {
		return fmt.Errorf("continue: %s: pass the continue value of the previous page unchanged, with the same labelSelector, or list again without it: %w", why, errdefs.ErrInvalidArgument)
	}
	if len(tok) > 1024 {
		return listContinue{}, bad("longer than any token the server issues")
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return listContinue{}, bad("not a token the server issued")
	}
	var lc listContinue
	if err := json.Unmarshal(raw, &lc); err != nil || lc.V != 1 || lc.Rev <= 0 || lc.Name == "" {
		return listContinue{}, bad("not a token the server issued")
	}
	if lc.Tenant != tn {
		return listContinue{}, bad("issued for another tenant's list")
	}
	if lc.Selector != selector {
		return listContinue{}, bad("issued for a list with another labelSelector")
	}
	return lc, nil
}

// listRead is one read of a tenant's current list, shared by the
// requests coalesced into it.
type listRead struct {
	recs []store.InstanceRecord // shared: read only
	rev  int64
}

// byCreation orders a list as clients see it: oldest first, then by name.
func byCreation(a, b *listedInstance) int {
	if c := a.inst.CreatedAt.Compare(b.inst.CreatedAt); c != 0 {
		return c
	}
	return cmp.Compare(a.inst.Name, b.inst.Name)
}

// listInstances answers GET /v1/instances: the tenant's instances,
// oldest first, optionally filtered by labelSelector and paged by
// limit and continue as Kubernetes pages lists: every page of one
// listing reads the snapshot (etcd revision) the first page read.
func (s *Server) listInstances(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	selector := q.Get("labelSelector")
	sel, err := model.ParseLabelSelector("labelSelector", selector)
	if err != nil {
		return err
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		limit, err = strconv.Atoi(v)
		if err != nil || limit < 1 || limit > maxListLimit {
			return fmt.Errorf("limit: %q is not a whole number from 1 to %d: %w", v, maxListLimit, errdefs.ErrInvalidArgument)
		}
	}
	tn, err := tenant.Name(r.Context())
	if err != nil {
		return err
	}
	var from *listContinue
	if v := q.Get("continue"); v != "" {
		lc, err := parseContinue(v, tn, selector)
		if err != nil {
			return err
		}
		from = &lc
	}
	rev := int64(0)
	if from != nil {
		rev = from.Rev
	}
	var recs []store.InstanceRecord
	var read int64
	if from == nil {
		var res listRead
		res, err = s.listReads.do(r.Context(), tn, func(ctx context.Context) (listRead, error) {
			recs, rev, err := s.store.ListInstanceRecords(ctx, 0)
			return listRead{recs, rev}, err
		})
		recs, read = res.recs, res.rev
	} else {
		recs, read, err = s.store.ListInstanceRecords(r.Context(), rev)
	}
	if err != nil {
		if from != nil && errdefs.IsFailedPrecondition(err) {
			return fmt.Errorf("continue: the listing's snapshot has expired (etcd compacted revision %d): list again without continue: %w", rev, errdefs.ErrFailedPrecondition)
		}
		return err
	}
	all, err := s.lists.listed(tn, recs, from == nil)
	if err != nil {
		return err
	}
	items := all[:0:0]
	for _, e := range all {
		if model.MatchLabels(sel, e.inst.Labels) {
			items = append(items, e)
		}
	}
	slices.SortFunc(items, byCreation)
	if from != nil {
		pos := &listedInstance{inst: &api.Instance{Name: from.Name, CreatedAt: from.Created}}
		i, _ := slices.BinarySearchFunc(items, pos, byCreation)
		for i < len(items) && byCreation(items[i], pos) <= 0 {
			i++
		}
		items = items[i:]
	}
	cont := ""
	if limit > 0 && len(items) > limit {
		items = items[:limit]
		last := items[limit-1].inst
		cont = listContinue{V: 1, Tenant: tn, Selector: selector, Rev: read, Created: last.CreatedAt, Name: last.Name}.encode()
	}
	b := listBuffers.Get().(*bytes.Buffer)
	defer listBuffers.Put(b)
	body := encodeList(b, items, cont)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return nil
}

// listBuffers hold list documents while they are written: a fresh 100 KB
// buffer per request was a tenth of a concurrent list's CPU, with the
// garbage collection it caused.
var listBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// encodeList writes an api.InstanceList of items into b (reset first)
// exactly as writeJSON would, from the items' cached encodings, and
// returns b's bytes.
func encodeList(b *bytes.Buffer, items []*listedInstance, cont string) []byte {
	n := 64 + len(cont)
	for _, e := range items {
		n += len(e.item) + 6
	}
	b.Reset()
	b.Grow(n)
	if len(items) == 0 {
		b.WriteString("{\n  \"items\": []")
	} else {
		b.WriteString("{\n  \"items\": [\n    ")
		for i, e := range items {
			if i > 0 {
				b.WriteString(",\n    ")
			}
			b.Write(e.item)
		}
		b.WriteString("\n  ]")
	}
	if cont != "" {
		c, _ := json.Marshal(cont)
		b.WriteString(",\n  \"continue\": ")
		b.Write(c)
	}
	b.WriteString("\n}\n")
	return b.Bytes()
}
