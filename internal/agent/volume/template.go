package volume

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// maxTemplates bounds the formatted images kept for reuse: one per
// scratch size asked for, the least recently used going first.
const maxTemplates = 32

// formatScratch puts at path a journal-less ext4 image whose free space is
// size. mkfs.ext4 is most of an emptyDir's cost (see bench/storage.md),
// so the first filesystem of a size is formatted into a template and
// every later one is a sparse copy of it. Copies share the filesystem
// UUID, which ext4 does not mind; persistent volumes are each formatted
// afresh and have their own.
func (m *Manager) formatScratch(ctx context.Context, path string, size int64) error {
	dir := filepath.Join(m.root, "templates")
	tpl := filepath.Join(dir, fmt.Sprintf("scratch-%d.img", size))
	if _, err := os.Stat(tpl); err != nil {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		tmp := fmt.Sprintf("%s.%d.tmp", tpl, time.Now().UnixNano())
		if err := format(ctx, tmp, size, false); err != nil {
			_ = os.Remove(tmp)
			return err
		}
		if err := os.Rename(tmp, tpl); err != nil {
			_ = os.Remove(tmp)
			return err
		}
		pruneTemplates(dir)
	} else {
		now := time.Now()
		_ = os.Chtimes(tpl, now, now) // most recently used
	}
	return copySparse(tpl, path)
}

func pruneTemplates(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) <= maxTemplates {
		return
	}
	type tpl struct {
		name string
		mod  time.Time
	}
	var ts []tpl
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			ts = append(ts, tpl{e.Name(), info.ModTime()})
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].mod.Before(ts[j].mod) })
	for _, t := range ts[:max(0, len(ts)-maxTemplates)] {
		_ = os.Remove(filepath.Join(dir, t.name))
	}
}
