// Command 4over6-web is the demo lab's "internet" host: a tiny HTTP server
// with a page and a deterministic test file, so a client can prove that a
// download through the tunnel arrived intact. It is built from this
// repository, so the lab needs no image registry or package mirror.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	listen := flag.String("listen", ":80", "HTTP listen address")
	size := flag.Int("size", 10<<20, "size in bytes of /file.bin")
	flag.Parse()
	file := testFile(*size)
	sum := sha256.Sum256(file)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "<html><body><h1>Hello from the IPv4 internet</h1><p>You are %s.</p></body></html>\n", r.RemoteAddr)
	})
	mux.HandleFunc("GET /file.bin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(file)))
		_, _ = w.Write(file)
	})
	mux.HandleFunc("GET /file.bin.sha256", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s  file.bin\n", hex.EncodeToString(sum[:]))
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	slog.Info("4over6-web serving", slog.String("listen", *listen), slog.Int("file_bytes", len(file)))
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "4over6-web:", err)
		os.Exit(1)
	}
}

// testFile is pseudo-random (incompressible) but the same on every run.
func testFile(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{'4', 'o', '6'})
	_, _ = io.ReadFull(r, b)
	return b
}
