package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
)

const (
	// blockSize is the ext4 block size of every filesystem made here:
	// the page size, so the loop device does no read-modify-write.
	blockSize = 4096
	// bytesPerInode gives one inode per 16 KiB, mke2fs's default ratio,
	// so a tenant with many small files runs out of space, not inodes;
	// mke2fs would pick 4 KiB with 128-byte inodes below 512 MiB.
	bytesPerInode = 16384
	inodeSize     = 256
	mib           = 1 << 20
)

// format makes an ext4 filesystem on a new sparse file at path whose free
// space, as statfs reports it to the writer, is at least want bytes and
// within a few percent of it: the file is grown by the filesystem's own
// overhead (inode tables, bitmaps, journal, ext4's reserved clusters) so
// that a 100 MiB volume holds 100 MiB, not 86.
//
// journal is for data that must survive a host crash (persistent
// volumes); scratch space (emptyDir, writable layers) goes without, as
// it is thrown away when the host restarts.
func format(ctx context.Context, path string, want int64, journal bool) error {
	size := roundUp(want+overheadEstimate(want, journal), blockSize)
	for try := 0; try < 4; try++ {
		if err := makeSparse(path, size); err != nil {
			return err
		}
		if err := mkfs(ctx, path, want, journal); err != nil {
			return err
		}
		avail, err := ext4Avail(path)
		if err != nil {
			return err
		}
		if avail >= want {
			return nil
		}
		// Larger filesystems have a little more metadata: grow by the
		// shortfall plus a margin and format again.
		size = roundUp(size+(want-avail)+mib, blockSize)
	}
	return fmt.Errorf("format %s: could not size the filesystem to %d bytes", path, want)
}

// overheadEstimate is what mke2fs and ext4 take out of a filesystem
// whose free space is want bytes, measured with e2fsprogs 1.47 (see
// doc.go): inode tables (inodeSize per bytesPerInode), ext4's reserved
// clusters (2%, at most 4096 blocks), bitmaps and group descriptors (two
// blocks and a bit per 128 MiB group), the journal, and a fixed part
// (superblock, root, lost+found). The overhead depends on the final
// size, so it is solved for by a few fixed-point steps.
func overheadEstimate(want int64, journal bool) int64 {
	over := func(s int64) int64 {
		o := s/(bytesPerInode/inodeSize) + min(s/50, 4096*blockSize) + s/16384 + 128<<10
		if journal {
			o += journalSize(want)
		}
		return o
	}
	s := want
	for range 4 {
		s = want + over(s)
	}
	return s - want
}

// journalSize is the journal asked of mke2fs: 1/64 of the volume, from
// ext4's minimum of 1024 blocks up to 128 MiB, which is what mke2fs
// would choose itself for most sizes; asking makes the estimate exact.
func journalSize(want int64) int64 {
	return min(max(roundUp(want/64, mib), 4*mib), 128*mib)
}

func makeSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func mkfs(ctx context.Context, path string, want int64, journal bool) error {
	features := "encrypt,^resize_inode"
	args := []string{"-q", "-F", "-t", "ext4", "-m", "0",
		"-b", fmt.Sprint(blockSize), "-i", fmt.Sprint(bytesPerInode), "-I", fmt.Sprint(inodeSize),
		// The file is a fresh sparse file, so it reads as zeros already:
		// mke2fs and the kernel skip zeroing inode tables and journal,
		// which would otherwise allocate them on the host's disk.
		"-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1,assume_storage_prezeroed=1"}
	if journal {
		args = append(args, "-J", fmt.Sprintf("size=%d", journalSize(want)/mib))
	} else {
		features += ",^has_journal"
	}
	args = append(args, "-O", features, path)
	out, err := exec.CommandContext(ctx, "mkfs.ext4", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %w: %s", path, err, bytes.TrimSpace(out))
	}
	return nil
}

// ext4Avail reads an unmounted ext4 filesystem's superblock and returns
// the bytes statfs will report as available once it is mounted: free
// blocks less the root reserve and ext4's reserved clusters
// (ext4_calculate_resv_clusters: 2% of the blocks, at most 4096).
func ext4Avail(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != 0xEF53 {
		return 0, fmt.Errorf("%s: no ext4 superblock", path)
	}
	blocks := uint64(le.Uint32(sb[0x4:]))
	reserved := uint64(le.Uint32(sb[0x8:]))
	free := uint64(le.Uint32(sb[0xC:]))
	const incompat64bit = 0x80
	if le.Uint32(sb[0x60:])&incompat64bit != 0 {
		blocks |= uint64(le.Uint32(sb[0x150:])) << 32
		reserved |= uint64(le.Uint32(sb[0x154:])) << 32
		free |= uint64(le.Uint32(sb[0x158:])) << 32
	}
	bs := uint64(1024) << le.Uint32(sb[0x18:])
	resv := min(blocks/50, 4096)
	if free < reserved+resv {
		return 0, nil
	}
	return int64((free - reserved - resv) * bs), nil
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// copySparse copies src to a new file dst, holes and all: only the
// extents that hold data are copied (SEEK_DATA/SEEK_HOLE and
// copy_file_range), so copying a fresh filesystem image of any size
// costs about as much as its metadata.
func copySparse(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(dst)
		}
	}()
	size := st.Size()
	if err := out.Truncate(size); err != nil {
		return err
	}
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("seek data in %s: %w", src, err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole in %s: %w", src, err)
		}
		for roff, woff := data, data; roff < hole; {
			n, err := unix.CopyFileRange(int(in.Fd()), &roff, int(out.Fd()), &woff, int(hole-roff), 0)
			if err != nil {
				return fmt.Errorf("copy %s: %w", src, err)
			}
			if n == 0 {
				return fmt.Errorf("copy %s: short copy at %d", src, roff)
			}
		}
		off = hole
	}
	return nil
}
