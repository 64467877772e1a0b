// A Go net/http server that uses go-systemd, unchanged, under the supervisor.
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o go-systemd-child .   # Debian: golang-github-coreos-go-systemd-dev
//	supervisor -l 127.0.0.1:8080 --ready notify -- ./go-systemd-child
//
// (With Go modules, import github.com/coreos/go-systemd/v22/activation and
// .../v22/daemon instead; this file uses the GOPATH layout of Debian's
// package, which builds without a module proxy.)
//
// activation.Listeners() takes the sockets from LISTEN_FDS (it checks
// LISTEN_PID and unsets the variables), daemon.SdNotify sends READY=1 once
// the server serves and STOPPING=1 when it drains. On SIGTERM, Shutdown stops
// accepting (it closes this process's copy of the listener, never
// shutdown(2)), waits for the requests in flight and closes idle keep-alive
// connections at once.
package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/coreos/go-systemd/activation"
	"github.com/coreos/go-systemd/daemon"
)

func main() {
	listeners, err := activation.Listeners()
	if err != nil {
		log.Fatal(err)
	}
	if len(listeners) != 1 {
		log.Fatalf("expected 1 inherited listener (LISTEN_FDS), got %d: run me under the supervisor", len(listeners))
	}
	generation := os.Getenv("SUPERVISOR_GENERATION")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "generation %s pid %d\n", generation, os.Getpid())
	})}

	sigterm := make(chan os.Signal, 1)
	signal.Notify(sigterm, syscall.SIGTERM)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(listeners[0]) }()
	daemon.SdNotify(false, daemon.SdNotifyReady)

	<-sigterm
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	if err := srv.Shutdown(context.Background()); err != nil {
		log.Fatal(err)
	}
	if err := <-served; err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
