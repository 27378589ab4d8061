package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
)

// serveFileMain is a minimal Go HTTP server for one file, used to compare
// the two ways Clowder could send a cached blob, outside Clowder:
//
//	-mode buf1m     io.CopyBuffer through a 1 MiB buffer with ReaderFrom and
//	                WriterTo hidden: what server/oci.go copyCached does today
//	-mode sendfile  io.Copy(w, *os.File): net/http's ReaderFrom -> sendfile(2)
func serveFileMain(args []string) {
	fs := flag.NewFlagSet("serve-file", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	mode := fs.String("mode", "sendfile", "buf1m or sendfile")
	file := fs.String("file", "", "file to serve at every path")
	_ = fs.Parse(args)
	fi, err := os.Stat(*file)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	size := fi.Size()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		f, err := os.Open(*file)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return
		}
		switch *mode {
		case "buf1m":
			buf := make([]byte, 1<<20)
			_, _ = io.CopyBuffer(writerOnly{w}, readerOnly{io.NewSectionReader(f, 0, size)}, buf)
		default:
			_, _ = io.Copy(w, f)
		}
	})
	if err := http.ListenAndServe(*listen, h); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type writerOnly struct{ io.Writer }
type readerOnly struct{ io.Reader }
