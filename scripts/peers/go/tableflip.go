//go:build tableflip

// The same server with tableflip (Debian: golang-github-cloudflare-tableflip-dev)
// in it, as tableflip's own example sets it up: SIGHUP upgrades (tableflip
// starts the binary again with the listener inherited, and the new process
// calls Ready once it serves); the old process drains once Exit is closed.
// $PEER_LISTEN is the address; $PEER_PID_FILE is where tableflip writes the
// serving process's pid. SIGTERM stops.
package main

import (
	"context"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/cloudflare/tableflip"
)

func main() {
	upg, err := tableflip.New(tableflip.Options{PIDFile: os.Getenv("PEER_PID_FILE")})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()

	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM)
		for s := range sig {
			if s == syscall.SIGTERM {
				upg.Stop()
				return
			}
			if err := upg.Upgrade(); err != nil {
				log.Println("upgrade failed:", err)
			}
		}
	}()

	ln, err := upg.Listen("tcp", os.Getenv("PEER_LISTEN"))
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: handler()}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}
	<-upg.Exit()
	if err := srv.Shutdown(context.Background()); err != nil {
		log.Fatal(err)
	}
	<-served
}
