// Command mkimage builds Kanga's test images from Debian's busybox-static:
// OCI archives of kanga.test/busybox, kanga.test/httpd and kanga.test/noentry,
// plus a docker-save archive of busybox. Output is byte-identical across runs.
//
//	go run ./hack/mkimage [-o testdata/images] [-busybox /bin/busybox]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/kanga-run/kanga/internal/testenv/testimage"
)

func main() {
	out := flag.String("o", "testdata/images", "output directory")
	busybox := flag.String("busybox", testimage.DefaultBusybox, "statically linked busybox binary")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	if err := testimage.Build(ctx, *out, testimage.Options{Busybox: *busybox}); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
	for _, img := range testimage.All() {
		fmt.Printf("%s\t%s\n", img.Ref, filepath.Join(*out, img.File))
	}
	fmt.Printf("%s (docker archive)\t%s\n", testimage.Busybox.Ref, filepath.Join(*out, testimage.DockerArchiveFile))
}
