// The one server of the peer benchmark (scripts/bench_peers.py), built twice
// from this directory with Debian's Go in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o peer-inherit .
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -tags tableflip -o peer-tableflip .
//
// Both builds share this handler, so the supervisor, Server::Starter and
// tableflip serve the same code. It answers every request with
// "version V pid P": V is read once, at start, from $PEER_VERSION_FILE, so
// the benchmark tells the new code from the old by writing the next version
// before each reload, as a deploy writes the next release. Keep-alives are
// on (Go's default); on its stop the server stops accepting, closes idle
// connections and finishes the requests in flight (http.Server.Shutdown).
package main

import (
	"fmt"
	"net/http"
	"os"
	"strings"
)

func handler() http.Handler {
	version := "0"
	if path := os.Getenv("PEER_VERSION_FILE"); path != "" {
		if b, err := os.ReadFile(path); err == nil {
			version = strings.TrimSpace(string(b))
		}
	}
	body := []byte(fmt.Sprintf("version %s pid %d\n", version, os.Getpid()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})
}
