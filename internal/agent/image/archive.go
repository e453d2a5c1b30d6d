package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/kanga-run/kanga/errdefs"
)

// An image archive comes from a tenant, and containerd's importer writes
// every regular entry to the content store as it reads it. A sparse entry
// (GNU or PAX sparse, which Go's tar reader expands) reads as its logical
// size with the holes as zeros: a 10 KB upload could make the host write
// terabytes. SafeArchive passes the archive on entry by entry and refuses
// sparse entries, so that what is written is bounded by what was sent.

// SafeArchive returns the tar stream r re-encoded without what an image
// archive never needs: sparse entries make it fail; entries other than
// regular files, directories and symbolic links (which docker save
// writes) are left out. The caller must Close the result, which stops the
// copy.
func SafeArchive(r io.Reader) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(copyArchive(pw, r)) }()
	return pr
}

func copyArchive(w io.Writer, r io.Reader) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return err
		}
		if sparse(hdr) {
			return fmt.Errorf("entry %q of the image archive is a sparse file, which image archives never hold: %w", hdr.Name, errdefs.ErrInvalidArgument)
		}
		//nolint:staticcheck // TypeRegA is deprecated, but old archives have it.
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA, tar.TypeDir, tar.TypeSymlink:
		default:
			continue
		}
		out := &tar.Header{Typeflag: hdr.Typeflag, Name: hdr.Name, Linkname: hdr.Linkname, Size: hdr.Size, Mode: hdr.Mode & 0o777, ModTime: hdr.ModTime}
		if out.Typeflag == tar.TypeRegA { //nolint:staticcheck // see above
			out.Typeflag = tar.TypeReg
		}
		if out.Typeflag != tar.TypeReg {
			out.Size = 0
		}
		if err := tw.WriteHeader(out); err != nil {
			return fmt.Errorf("entry %q of the image archive: %v: %w", hdr.Name, err, errdefs.ErrInvalidArgument)
		}
		if out.Size > 0 {
			if _, err := io.Copy(tw, tr); err != nil {
				return err
			}
		}
	}
}

func sparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}
