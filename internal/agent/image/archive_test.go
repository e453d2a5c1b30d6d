package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/errdefs"
)

// TestSafeArchiveRefusesSparse: a 10 KB archive whose entry reads as a
// terabyte (testdata/sparse-bomb.tar: a PAX 1.0 sparse entry, one byte and
// a hole, written by Python's tarfile; Go's tar writer cannot write one)
// is refused before anything is passed on.
func TestSafeArchiveRefusesSparse(t *testing.T) {
	bomb, err := os.ReadFile("testdata/sparse-bomb.tar")
	if err != nil {
		t.Fatal(err)
	}
	h, err := tar.NewReader(bytes.NewReader(bomb)).Next()
	if err != nil || h.Size != 1<<40 {
		t.Fatalf("the test archive is not the sparse file it should be: %+v, %v", h, err)
	}
	rc := SafeArchive(bytes.NewReader(bomb))
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "sparse") || n > 1024 {
		t.Fatalf("SafeArchive of a sparse bomb: %d bytes, %v; want a refusal", n, err)
	}
}

// TestSafeArchiveKeepsImages: an archive of regular files, directories
// and symlinks passes unchanged in content; other entries are left out.
func TestSafeArchiveKeepsImages(t *testing.T) {
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "blobs/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: "blobs/sha256/abc", Size: 5, Mode: 0o644},
		{Typeflag: tar.TypeSymlink, Name: "layer.tar", Linkname: "blobs/sha256/abc"},
		{Typeflag: tar.TypeFifo, Name: "fifo"},
		{Typeflag: tar.TypeChar, Name: "dev", Devmajor: 1, Devminor: 3},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			io.WriteString(tw, "hello")
		}
	}
	tw.Close()
	rc := SafeArchive(&in)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var got []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		got = append(got, h.Name+":"+string(h.Typeflag)+":"+h.Linkname+":"+string(b))
	}
	want := "blobs/:5::,blobs/sha256/abc:0::hello,layer.tar:2:blobs/sha256/abc:"
	if strings.Join(got, ",") != want {
		t.Fatalf("entries = %v, want %s", got, want)
	}
}
