package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
)

// The audit log is a hash chain in etcd: records under ordered keys
// (/kanga/audit/log/<seq, 20 digits>) and a head (/kanga/audit/head) with
// the last sequence number and hash. An append reads the head and commits
// its records together with the new head in one transaction that compares
// the head's revision, so every control-plane replica appends to the one
// chain, in one order, and a record is either durable (etcd's raft log and
// fsync) or not written at all, whatever process is killed when.
const (
	auditHeadKey   = "/kanga/audit/head"
	auditLogPrefix = "/kanga/audit/log/"
	// auditBatch bounds the records of one transaction (etcd allows 128
	// operations per transaction by default).
	auditBatch = 100
)

type auditHead struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
}

func auditKey(seq int64) string { return fmt.Sprintf("%s%020d", auditLogPrefix, seq) }

// AuditHash is the hash of a record: SHA-256 of its JSON encoding with the
// Hash field empty (PrevHash included, which chains it to the one before).
func AuditHash(rec api.AuditRecord) string {
	rec.Hash = ""
	b, _ := json.Marshal(rec)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// AppendAudit appends records to the chain, in order, and returns them
// with their sequence numbers and hashes.
func (s *Store) AppendAudit(ctx context.Context, recs []api.AuditRecord) ([]api.AuditRecord, error) {
	out := make([]api.AuditRecord, 0, len(recs))
	for len(recs) > 0 {
		n := min(len(recs), auditBatch)
		done, err := s.appendAudit(ctx, slices.Clone(recs[:n]))
		if err != nil {
			return out, err
		}
		out = append(out, done...)
		recs = recs[n:]
	}
	return out, nil
}

func (s *Store) appendAudit(ctx context.Context, recs []api.AuditRecord) ([]api.AuditRecord, error) {
	// The head this replica wrote last saves a read while it is the only
	// one appending; the transaction's comparison catches any other.
	s.auditMu.Lock()
	defer s.auditMu.Unlock()
	for {
		head, rev := s.auditHead, s.auditHeadRev
		if rev == 0 {
			resp, err := s.client.Get(ctx, auditHeadKey)
			if err != nil {
				return nil, s.etcdErr(ctx, "read the audit head", err)
			}
			head = auditHead{}
			if len(resp.Kvs) > 0 {
				if err := json.Unmarshal(resp.Kvs[0].Value, &head); err != nil {
					return nil, fmt.Errorf("store: the audit head is unreadable (%v): run kanga audit --verify: %w", err, errUnreadable)
				}
				rev = resp.Kvs[0].ModRevision
			}
		}
		ops := make([]clientv3.Op, 0, len(recs)+1)
		prev := head.Hash
		for i := range recs {
			head.Seq++
			recs[i].Seq = head.Seq
			recs[i].PrevHash = prev
			recs[i].Hash = AuditHash(recs[i])
			prev = recs[i].Hash
			b, err := json.Marshal(recs[i])
			if err != nil {
				return nil, err
			}
			ops = append(ops, clientv3.OpPut(auditKey(head.Seq), string(b)))
		}
		head.Hash = prev
		hb, _ := json.Marshal(head)
		ops = append(ops, clientv3.OpPut(auditHeadKey, string(hb)))
		txn, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(auditHeadKey), "=", rev)).
			Then(ops...).Commit()
		if err != nil {
			s.auditHeadRev = 0
			return nil, s.etcdErr(ctx, "append to the audit log", err)
		}
		if txn.Succeeded {
			s.auditHead, s.auditHeadRev = head, txn.Header.Revision
			return recs, nil
		}
		// Another replica appended first (or the head was not known yet):
		// read it and chain onto its records.
		s.auditHeadRev = 0
		if rev == 0 {
			// The head did not exist when read, and now does.
			continue
		}
	}
}

var errUnreadable = fmt.Errorf("unreadable record")

// AuditFilter selects records of the audit log.
type AuditFilter struct {
	Since  time.Time // zero: from the start
	Tenant string    // empty: every tenant
	// Limit keeps the newest Limit records that match (0: 1000).
	Limit int
}

// ListAudit returns the newest records that match f, oldest first. It
// reads backwards from the head and stops at the first record older than
// f.Since by more than a minute (replicas' clocks differ a little).
func (s *Store) ListAudit(ctx context.Context, f AuditFilter) ([]api.AuditRecord, error) {
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	var out []api.AuditRecord
	end := clientv3.GetPrefixRangeEnd(auditLogPrefix)
	for len(out) < f.Limit {
		resp, err := s.client.Get(ctx, auditLogPrefix, clientv3.WithRange(end),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(500))
		if err != nil {
			return nil, s.etcdErr(ctx, "read the audit log", err)
		}
		if len(resp.Kvs) == 0 {
			break
		}
		stop := false
		for _, kv := range resp.Kvs {
			var rec api.AuditRecord
			if err := json.Unmarshal(kv.Value, &rec); err != nil {
				// Shown, so that an administrator sees it; verify says more.
				seq, _ := strconv.ParseInt(strings.TrimPrefix(string(kv.Key), auditLogPrefix), 10, 64)
				rec = api.AuditRecord{Seq: seq, Verb: "unreadable"}
			}
			if !f.Since.IsZero() && !rec.Time.IsZero() && rec.Time.Before(f.Since.Add(-time.Minute)) {
				stop = true
				break
			}
			if (f.Since.IsZero() || !rec.Time.Before(f.Since)) && (f.Tenant == "" || rec.Tenant == f.Tenant) {
				out = append(out, rec)
				if len(out) == f.Limit {
					break
				}
			}
		}
		if stop || !resp.More {
			break
		}
		end = string(resp.Kvs[len(resp.Kvs)-1].Key) // exclusive: continue below it
	}
	slices.Reverse(out)
	return out, nil
}

// VerifyAudit checks the whole chain: every record decodes, is stored in
// its canonical encoding under its own sequence number, follows the one
// before without gap, carries the hash of the one before and its own
// correct hash; the head names the last record. Each problem names the
// record.
func (s *Store) VerifyAudit(ctx context.Context) (api.AuditVerification, error) {
	v := api.AuditVerification{Problems: []api.AuditProblem{}}
	headResp, err := s.client.Get(ctx, auditHeadKey)
	if err != nil {
		return v, s.etcdErr(ctx, "read the audit head", err)
	}
	rev := headResp.Header.Revision // one consistent view of head and log
	var head auditHead
	headOK := true
	if len(headResp.Kvs) > 0 {
		if err := json.Unmarshal(headResp.Kvs[0].Value, &head); err != nil {
			headOK = false
			v.Problems = append(v.Problems, api.AuditProblem{Seq: 0, Problem: "the chain head is unreadable: " + err.Error()})
		}
	}
	add := func(seq int64, format string, args ...any) {
		v.Problems = append(v.Problems, api.AuditProblem{Seq: seq, Problem: fmt.Sprintf(format, args...)})
	}
	var lastSeq int64
	prevHash := ""
	key := auditLogPrefix
	end := clientv3.GetPrefixRangeEnd(auditLogPrefix)
	for {
		resp, err := s.client.Get(ctx, key, clientv3.WithRange(end), clientv3.WithRev(rev), clientv3.WithLimit(1000))
		if err != nil {
			return v, s.etcdErr(ctx, "read the audit log", err)
		}
		for _, kv := range resp.Kvs {
			v.Records++
			seq, err := strconv.ParseInt(strings.TrimPrefix(string(kv.Key), auditLogPrefix), 10, 64)
			if err != nil {
				add(lastSeq+1, "a key that is no record's: %q", kv.Key)
				continue
			}
			if seq != lastSeq+1 {
				add(seq, "records %d to %d are missing before it", lastSeq+1, seq-1)
			}
			lastSeq = seq
			var rec api.AuditRecord
			dec := json.NewDecoder(bytes.NewReader(kv.Value))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&rec); err != nil {
				add(seq, "altered: not a valid record (%v)", err)
				prevHash = "" // the next link cannot be checked
				continue
			}
			if rec.Seq != seq {
				add(seq, "altered: it says it is record %d", rec.Seq)
			}
			if canon, _ := json.Marshal(rec); !bytes.Equal(canon, kv.Value) {
				add(seq, "altered: the stored bytes are not the record's own encoding")
			} else if AuditHash(rec) != rec.Hash {
				add(seq, "altered: its content does not match its hash")
			}
			if seq > 1 && prevHash != "" && rec.PrevHash != prevHash {
				add(seq, "does not follow record %d: it names the previous hash %.16s…, which is %.16s…", seq-1, rec.PrevHash, prevHash)
			}
			if seq == 1 && rec.PrevHash != "" {
				add(seq, "the first record names a previous hash")
			}
			prevHash = rec.Hash
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	if headOK && (head.Seq != lastSeq || (prevHash != "" && head.Hash != prevHash)) {
		add(head.Seq, "the chain head names record %d (hash %.16s…), but the last record is %d: records were removed or added at the end", head.Seq, head.Hash, lastSeq)
	}
	v.OK = len(v.Problems) == 0
	return v, nil
}
