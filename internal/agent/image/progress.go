package image

import (
	"context"
	"io"
	"os"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
)

const (
	// progressEvery throttles progress reports.
	progressEvery = 200 * time.Millisecond
)

// progressReader reports how much of an archive has been read.
type progressReader struct {
	r      io.Reader
	report func(api.Progress)
	total  int64
	n      int64
	last   time.Time
}

func newProgressReader(r io.Reader, report func(api.Progress)) *progressReader {
	pr := &progressReader{r: r, report: report}
	// A file (the CLI's usual source) knows its size; a request body does not.
	if f, ok := r.(interface{ Stat() (os.FileInfo, error) }); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			pr.total = st.Size()
		}
	}
	return pr
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.report != nil && time.Since(p.last) >= progressEvery {
		p.flush()
	}
	return n, err
}

func (p *progressReader) flush() {
	if p.report == nil {
		return
	}
	p.last = time.Now()
	p.report(api.Progress{Status: "reading archive", Current: p.n, Total: p.total})
}

// watchIngests reports download progress by polling the content store's
// active ingests, as ctr does: the unpacker fetches layers itself, so no
// handler sees every byte. Ingests of concurrent pulls on the host are
// counted too. The returned stop waits for the watcher to end.
func (s *Service) watchIngests(ctx context.Context, progress func(api.Progress)) (stop func()) {
	if progress == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cs := s.client.ContentStore()
		type ingest struct{ offset, total int64 }
		seen := map[string]ingest{}
		var lastCur, lastTotal int64
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			statuses, err := cs.ListStatuses(ctx)
			if err != nil {
				continue
			}
			active := map[string]bool{}
			for _, st := range statuses {
				active[st.Ref] = true
				seen[st.Ref] = ingest{st.Offset, st.Total}
			}
			var cur, total int64
			for ref, in := range seen {
				if !active[ref] {
					in.offset = in.total // committed
				}
				cur += in.offset
				total += in.total
			}
			if cur != lastCur || total != lastTotal {
				lastCur, lastTotal = cur, total
				progress(api.Progress{Status: "downloading", Current: cur, Total: total})
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
	}
}
